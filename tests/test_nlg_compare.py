"""The e2e comparison's summary and table, its resuming of finished runs, and the command line of the
data-to-text task."""
import pytest

from tinymix import checkpoint, cli, nlg, nlg_compare


def test_compare_summary_and_table():
    runs = [{"bleu": b, "bleu_held_out": b / 2, "slot_error_rate": s, "best_validation_loss": 1.0,
             "test_loss_merged": 2.0, "test_loss_unmerged": 2.0, "trainable_parameters": 10,
             "merged_parameters": 5, "all_parameters": 100, "train_seconds": 3.0, "decode_seconds": 1.0}
            for b, s in ((40.0, 10.0), (50.0, 20.0))]
    row = nlg_compare.summarise("adamix-lora", runs)
    assert row["bleu"] == pytest.approx((45.0, 7.0710678)) and row["slot_error_rate"][0] == 15.0
    table = nlg_compare.markdown_table([row])
    assert "| AdaMix-LoRA | 2 | 45.0 ± 7.1 | 22.5 ± 3.5 | 15.0 ± 7.1 |" in table


def test_command_line_dispatch():
    is_e2e = nlg_compare.is_e2e
    assert is_e2e(["train", "--task", "e2e"]) and is_e2e(["compare", "--seeds", "2", "--task=e2e"])
    assert not is_e2e(["train", "--task", "movie-reviews"]) and not is_e2e(["eval", "--task", "e2e"])
    args = nlg_compare.parse_args(["train", "--task", "e2e", "--method", "adamix-adapter", "--steps", "3"])
    cfg = nlg.config_from_args(args, nlg.NLGConfig())
    assert cfg.method == "adamix" and cfg.steps == 3 and args.run is nlg.train_command
    args = nlg_compare.parse_args(["compare", "--task", "e2e", "--seeds", "2", "--methods", "lora,full"])
    assert args.seeds == 2 and args.run is nlg_compare.compare_command
    with pytest.raises(SystemExit, match="unknown method 'nope'"):
        cli.main(["train", "--task", "e2e", "--method", "nope"])


def test_finished_runs_are_reused_only_if_made_from_the_same_weights(tmp_path):
    cfg = nlg.NLGConfig(method="lora", out=str(tmp_path / "lora" / "seed0"))
    assert not nlg_compare.finished(cfg)                               # nothing there yet
    results = tmp_path / "lora" / "seed0" / "results.json"
    checkpoint.save_json(results, {"pretrained_weights": nlg.pretrained_weights_id("tiny-gpt")})
    assert nlg_compare.finished(cfg)
    checkpoint.save_json(results, {"pretrained_weights": "0" * 64})    # made before a new pretraining
    with pytest.raises(ValueError, match="trained from other tiny-gpt weights"):
        nlg_compare.finished(cfg)


def test_decoding_speed_reloads_a_merged_adamix_run(tmp_path):
    """The speed test rebuilds the model of a finished run from its saved merged adapter: for AdaMix
    the mixtures must be merged before the saved (merged) weights fit."""
    cfg = nlg.NLGConfig(method="adamix-lora", num_experts=2, steps=1, batch_size=2, train_size=4,
                        validation_size=1, test_size=2, eval_every=1, decoding="greedy", beam_width=2,
                        max_new_tokens=3, progress=False, out=str(tmp_path / "run"))
    nlg.train(cfg)
    speed = nlg_compare.decoding_speed(cfg, prompts=2, new_tokens=3)
    assert set(speed) == {"greedy_cached", "greedy_uncached", "beam_cached", "beam_uncached"}
    assert all(value > 0 for value in speed.values())
