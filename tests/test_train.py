"""The training loop, its checkpoints and its errors, and `compare`, on a tiny random encoder
("random-tiny": MiniLM's real tokenizer, a 2-layer hidden-32 Transformer) so each run takes seconds."""

import numpy as np
import pytest

from tinymix.store import checkpoint
from tinymix import data, functional, methods, train as train_module
from tinymix.train import TrainConfig, length_grouped_batches, train
from tinymix import backend

pytestmark = pytest.mark.numerics


def tiny_splits(n_train=48, n_eval=24):
    """Small real movie-review splits (the loop does not care how large they are)."""
    full = data.load_movie_reviews()
    cut = lambda s, n: data.Split(s.texts[:n], s.labels[:n])
    return {"train": cut(full["train"], n_train), "validation": cut(full["validation"], n_eval),
            "test": cut(full["test"], n_eval)}


def tiny_config(tmp_path=None, **overrides):
    settings = dict(model="random-tiny", epochs=1, batch_size=8, progress=False, eval_batch_size=16,
                    out=str(tmp_path / "run") if tmp_path else "")
    return TrainConfig(**{**settings, **overrides})


def test_training_lowers_the_loss_and_reports_a_full_result(tmp_path):
    result = train(tiny_config(tmp_path, epochs=3, lr=1e-2), tiny_splits())
    losses = result["losses"]
    assert len(losses) == 3 * 6 and all(np.isfinite(losses))
    assert np.mean(losses[-6:]) < np.mean(losses[:6])
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert result["merged_parameters"] < result["trainable_parameters"]   # AdaMix: M experts -> 1
    run = tmp_path / "run"
    saved = checkpoint.load_json(run / "results.json")
    assert saved["test_accuracy"] == result["test_accuracy"]
    assert checkpoint.load_json(run / "config.json")["epochs"] == 3
    for folder in ("best", "merged", f"checkpoints/epoch-{3:04d}"):
        assert (run / folder / "adapter_model.safetensors").is_file(), folder
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*"))


def test_the_best_epoch_is_chosen_on_validation(tmp_path):
    result = train(tiny_config(tmp_path, epochs=3, lr=1e-2), tiny_splits())
    accuracies = [h["validation_accuracy"] for h in result["history"]]
    assert result["validation_accuracy"] == max(accuracies)
    assert result["best_epoch"] == accuracies.index(max(accuracies)) + 1


class Interrupted(Exception):
    pass


def interrupt_at_call(monkeypatch, n, make=lambda loss: None):
    """Make the n-th training loss call raise Interrupted (or return make(loss), if not None)."""
    real, calls = functional.cross_entropy, {"n": 0}

    def wrapped(logits, targets, **kwargs):
        calls["n"] += 1
        loss = real(logits, targets, **kwargs)
        if calls["n"] == n:
            replaced = make(loss)
            if replaced is None:
                raise Interrupted
            return replaced
        return loss
    monkeypatch.setattr(functional, "cross_entropy", wrapped)


def test_resume_repeats_exactly_what_an_uninterrupted_run_does(tmp_path, monkeypatch):
    splits = tiny_splits()
    straight = train(tiny_config(tmp_path / "straight", epochs=2), splits)
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, 6 + 2)                      # a crash in the 2nd step of epoch 2
        with pytest.raises(Interrupted):
            train(tiny_config(tmp_path, epochs=2), splits)
    resumed = train(tiny_config(tmp_path, epochs=2, resume=True), splits)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert len(resumed["losses"]) == len(straight["losses"]) == 12
    np.testing.assert_allclose(resumed["losses"], straight["losses"], rtol=1e-5)
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def test_a_checkpoint_from_another_configuration_is_refused(tmp_path):
    splits = tiny_splits()
    train(tiny_config(tmp_path, epochs=1), splits)
    with pytest.raises(ValueError, match=r"has other settings.*num_experts.*\(4, 2\)"):
        train(tiny_config(tmp_path, epochs=2, resume=True, num_experts=2), splits)


def test_a_nan_loss_stops_the_run_and_leaves_the_last_checkpoint_intact(tmp_path, monkeypatch):
    splits = tiny_splits()
    train(tiny_config(tmp_path, epochs=1), splits)
    last = tmp_path / "run" / "checkpoints" / "epoch-0001"
    before = {p.name: p.read_bytes() for p in last.iterdir()}
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, 3, make=lambda loss: loss * float("nan"))
        with pytest.raises(FloatingPointError) as caught:
            train(tiny_config(tmp_path, epochs=2, resume=True), splits)
    message = str(caught.value)
    assert message.startswith("loss became nan at step 8 (epoch 2); stopping.")
    assert f"The last complete checkpoint is {last};" in message
    assert f"python3 -m tinymix train --out {tmp_path / 'run'} --resume --lr 0.0003" in message
    assert {p.name: p.read_bytes() for p in last.iterdir()} == before
    # ... and that command continues the run with the lower rate, recorded as a change of the run
    resumed = train(tiny_config(tmp_path, epochs=2, resume=True, lr=3e-4), splits)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["config_history"][-1]["changed"] == {"lr": [0.0, 3e-4]}   # 0.0: the method's default


def test_a_nan_loss_is_found_at_its_own_step_when_losses_are_read_in_groups(monkeypatch):
    interrupt_at_call(monkeypatch, 2, make=lambda loss: loss * float("nan"))   # the 2nd step's loss
    with pytest.raises(FloatingPointError, match=r"loss became nan at step 1 \(epoch 1\); stopping\. No setting "
                       r"is far above its default.*Nothing was saved \(no --out\)"):
        train(tiny_config(epochs=1, log_every=4), tiny_splits())


@pytest.mark.parametrize("settings, named", [
    (dict(method="lora", lora_alpha=3200.0), "--lora-alpha 3200 (default 32)"),
    (dict(consistency_weight=500.0), "--consistency-weight 500 (default 1)"),
    (dict(lr=0.5), "--lr 0.5 (default 0.003)"),
])
def test_the_nan_message_names_the_extreme_setting_and_claims_no_checkpoint_that_is_not_there(
        tmp_path, monkeypatch, settings, named):
    interrupt_at_call(monkeypatch, 2, make=lambda loss: loss * float("nan"))
    with pytest.raises(FloatingPointError) as caught:
        train(tiny_config(tmp_path, **settings), tiny_splits())
    message = str(caught.value)
    assert f"Likely cause: {named}." in message
    assert "checkpoint is" not in message and "No checkpoint was saved" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_low_memory_training_repeats_the_normal_run():
    splits = tiny_splits()
    normal = train(tiny_config(epochs=2, log_every=4), splits)
    low = train(tiny_config(epochs=2, low_memory=True), splits)
    assert len(low["losses"]) == len(normal["losses"]) == 12
    np.testing.assert_allclose(low["losses"], normal["losses"], rtol=1e-4)
    assert low["test_accuracy"] == normal["test_accuracy"]


def test_training_steps_read_nothing_back_between_log_reads(monkeypatch):
    """On a GPU a read-back makes the host wait: the loop reads the losses once per --log-every steps
    (one transfer) and its steps call neither .item() nor float() on a device value."""
    from tinymix.tensor import Tensor
    reads = {"item": 0, "to_numpy": 0}
    real_to_numpy = backend.to_numpy

    def counting_item(self):
        reads["item"] += 1
        return self.data.item()

    def counting_to_numpy(array):
        if backend.is_array(array) and array.ndim in (1, 2) and array.dtype.kind == "f":   # losses (and their terms)
            reads["to_numpy"] += 1
        return real_to_numpy(array)
    monkeypatch.setattr(Tensor, "item", counting_item)
    monkeypatch.setattr(backend, "to_numpy", counting_to_numpy)
    result = train(tiny_config(epochs=1, log_every=4), tiny_splits())     # 6 steps: reads after 4 and 6
    assert len(result["losses"]) == 6
    assert reads == {"item": 0, "to_numpy": 4}       # + after the epoch and after training: the experts' distances


def test_log_every_must_be_positive():
    with pytest.raises(ValueError, match="--log-every must be an integer >= 1, got 0"):
        tiny_config(log_every=0)


# peft.py's own methods; the neighbours' (tinymix/neighbours/) are trained in tests/test_neighbours_wiring.py,
# LiST's adapter (128 wide: wider than this tiny model) in tests/test_selftrain.py on MiniLM
@pytest.mark.parametrize("method", [name for name in methods.names(methods.CLASSIFICATION)
                                    if methods.peft_config(tiny_config(method=name)).method in methods.peft.CONFIGS
                                    and name != "list-adapter"])
def test_every_method_trains(method):
    result = train(tiny_config(method=method, lr=1e-2), tiny_splits(n_train=16, n_eval=8))
    assert np.isfinite(result["losses"]).all()
    expect_fewer = method.startswith("adamix")
    assert (result["merged_parameters"] < result["trainable_parameters"]) == expect_fewer


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--method must be one of adamix, .*; got 'sgd'"):
        TrainConfig(method="sgd")
    with pytest.raises(ValueError, match="unknown task 'mnli'"):
        TrainConfig(task="mnli")
    splits = tiny_splits(n_train=8, n_eval=8)
    empty = {**splits, "train": data.Split([], [])}
    with pytest.raises(ValueError, match="training split is empty"):
        train(tiny_config(), empty)
    with pytest.raises(ValueError, match=r"the validation split has labels \[-1\]"):
        train(tiny_config(), {**splits, "validation": data.Split(splits["validation"].texts[:1], [-1])})


def test_a_tsv_task_folder_trains(tmp_path):
    folder = tmp_path / "task"
    folder.mkdir()
    rows = [("a wonderful, moving film", 1), ("dull and lifeless", 0)] * 6
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (folder / name).write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    result = train(TrainConfig(task=str(folder), model="random-tiny", epochs=1, batch_size=4, progress=False))
    assert 0.0 <= result["test_accuracy"] <= 1.0


def test_length_grouped_batches_cover_every_sentence_once_and_group_by_length():
    split = data.Split([("word " * n).strip() for n in range(1, 65)], [n % 2 for n in range(64)])
    batches = list(length_grouped_batches(split, 8, backend.host_generator(0)))
    seen = sorted(t for texts, _ in batches for t in texts)
    assert seen == sorted(split.texts)
    spreads = [max(map(len, texts)) - min(map(len, texts)) for texts, _ in batches]
    assert max(spreads) < 8 * 5   # sorted stretches: a batch spans 8 neighbouring lengths, not 64




@pytest.mark.parametrize("method, weight", [("adamix", 2.0), ("lora", 2.0)])
def test_losses_json_holds_the_task_loss_and_the_consistency_term_per_step(tmp_path, method, weight):
    result = train(tiny_config(tmp_path, method=method, consistency_weight=weight), tiny_splits())
    saved = checkpoint.load_json(tmp_path / "run" / "losses.json")
    two_passes = method == "adamix"
    assert saved["consistency_weight"] == (weight if two_passes else 0.0)
    assert len(saved["loss"]) == len(saved["task"]) == len(saved["consistency"]) == 6
    assert saved["loss"] == result["losses"]
    spread = result["history"][0].get("expert_spread")          # AdaMix only: its experts drift apart
    assert (spread > 0) if two_passes else spread is None
    total = np.array(saved["task"]) + saved["consistency_weight"] * np.array(saved["consistency"])
    np.testing.assert_allclose(saved["loss"], total, rtol=1e-5)
    assert (min(saved["consistency"]) > 0) if two_passes else saved["consistency"] == [0.0] * 6


def test_all_parameters_counts_the_frozen_model_and_every_expert():
    """One rule (peft.py): "all" = the model as trained, every expert included, as print_trainable_parameters
    and the lessons count it; not the merged model (which has one expert per mixture)."""
    from tinymix import peft
    result = train(tiny_config(method="adamix"), tiny_splits(16, 8))
    model, _ = train_module.build_model(tiny_config(method="adamix"), 2)
    assert result["all_parameters"] == peft.print_trainable_parameters(model)[1] == model.num_parameters()
    frozen = model.num_parameters() - model.num_parameters(trainable_only=True)
    assert result["all_parameters"] == frozen + result["trainable_parameters"] > frozen + result["merged_parameters"]


def test_the_training_curve_draws_the_two_terms_apart(tmp_path, monkeypatch):
    from tinymix import plots
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda figure, path: drawn.update(
        labels=[axis.get_ylabel() for axis in figure.axes]))
    history = [{"epoch": 1, "validation_accuracy": 0.5}]
    terms = {"loss": [1.0, 0.9], "task": [0.8, 0.7], "consistency": [0.2, 0.2], "consistency_weight": 1.0}
    plots.training_curve(terms["loss"], history, tmp_path / "a.png", terms=terms)
    assert drawn["labels"] == ["task loss (cross-entropy)", "consistency term (symmetric KL; weight 1 in the loss)",
                               "validation accuracy"]
    plots.training_curve([1.0, 0.9], history, tmp_path / "b.png", terms={**terms, "consistency_weight": 0.0})
    assert drawn["labels"] == ["training loss", "validation accuracy"]


def test_patience_stops_on_a_validation_plateau_and_a_resumed_run_stops_too(tmp_path, monkeypatch):
    """--patience 2: epochs 3 and 4 bring nothing better than epoch 2, so training stops after epoch 4 of 8;
    the best epoch (2) is the one deployed. Scripted validation accuracies make the plateau certain."""
    scores = iter([0.5, 0.6, 0.55, 0.6, 0.9, 0.9, 0.9, 0.9])
    original = train_module.evaluate
    monkeypatch.setattr(train_module, "evaluate", lambda model, tokenizer, split, batch_size=128, per_example=False:
                        original(model, tokenizer, split, batch_size, per_example) if per_example else next(scores))
    cfg = TrainConfig(method="lora", model="random-tiny", epochs=8, train_size=16, patience=2, out=str(tmp_path / "run"),
                      progress=False)
    result = train(cfg)
    assert (result["best_epoch"], result["epochs_trained"], result["validation_accuracy"]) == (2, 4, 0.6)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="--patience stops on a validation plateau"):
        TrainConfig(method="lora", patience=1, select_on_validation=False, train_size=30).validate()
    with pytest.raises(ValueError, match="patience"):
        TrainConfig(method="lora", patience=-1).validate()
