"""The fair protocol (tinymix/experiments): statistics, learning-rate search, run reuse, worker processes,
and both comparisons end to end on tiny budgets."""
import argparse
import json
import math
import shutil

import numpy as np
import pytest

from tinymix.store import checkpoint
from tinymix import cli, data
from tinymix.e2e import finetune
from tinymix.cli import commands
from tinymix.cli.flags import config_from_args
from tinymix.train import TrainConfig
from tinymix.experiments import nlu, protocol, report, stats
from tinymix.experiments.protocol import Arm


# ---- statistics --------------------------------------------------------------------------------------

def t_density(x, df):
    return math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2)) * (1 + x * x / df) ** (-(df + 1) / 2)


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30])
def test_t_table_holds_the_975_quantile(df):
    """95% of Student's t lies between -t and t: integrate the density numerically."""
    q = stats.t_quantile(df)
    xs = np.linspace(-q, q, 200_001)
    mass = np.trapezoid([t_density(x, df) for x in xs[::100]], xs[::100])
    assert mass == pytest.approx(0.95, abs=2e-4)


def test_paired_difference_and_verdicts():
    left, right = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.83}, {0: 0.78, 1: 0.79, 2: 0.80, 3: 0.80, 9: 0.5}
    d = stats.paired_difference(left, right)
    assert d["n"] == 4 and d["differences"] == pytest.approx([0.02, 0.03, 0.01, 0.03])    # seed 9 unpaired
    half = stats.t_quantile(3) * np.std([0.02, 0.03, 0.01, 0.03], ddof=1) / 2
    assert (d["low"], d["high"]) == pytest.approx((0.0225 - half, 0.0225 + half))
    assert stats.verdict(d) == "held"
    assert stats.verdict(stats.paired_difference(right, left)) == "refuted"
    noisy = stats.paired_difference({0: 1.0, 1: 0.0, 2: 0.5}, {0: 0.0, 1: 1.0, 2: 0.5})
    assert stats.verdict(noisy) == "inconclusive"
    assert stats.verdict(d, "equivalent", 0.05) == "held" and stats.verdict(d, "equivalent", 0.005) == "refuted"
    assert stats.verdict(stats.paired_difference({0: 1.0}, {0: 0.0})) == "not enough seeds"


# ---- run folders -------------------------------------------------------------------------------------

def test_a_finished_run_is_reused_only_for_the_same_request(tmp_path):
    request = {"task": "nlu", "config": {"lr": 1e-3, "seed": 0}}
    assert protocol.finished(tmp_path, request) is None
    checkpoint.save_json(tmp_path / "request.json", request)
    assert protocol.finished(tmp_path, request) is None                   # asked for, not finished
    checkpoint.save_json(tmp_path / "results.json", {"validation_accuracy": 0.7})
    assert protocol.finished(tmp_path, request) == {"validation_accuracy": 0.7}
    with pytest.raises(ValueError, match=r"other settings \(config.lr: 0.001 -> 0.003\)"):
        protocol.finished(tmp_path, {"task": "nlu", "config": {"lr": 3e-3, "seed": 0}})
    # a config field added later, at the default that keeps the old behaviour, still matches
    newer = {"task": "nlu", "config": {"lr": 1e-3, "seed": 0, "new_knob": "off"}}
    assert protocol.finished(tmp_path, newer, defaults={"new_knob": "off"}) is not None
    with pytest.raises(ValueError, match="new_knob"):
        protocol.finished(tmp_path, {"task": "nlu", "config": {**newer["config"], "new_knob": "on"}},
                          defaults={"new_knob": "off"})


class PeakedTask:
    """A stand-in task whose validation score peaks at lr = 0.01, outside the starting grid."""
    name, defaults = "fake", {}

    def request(self, arm, lr, seed, test):
        return {"task": "fake", "config": {"arm": arm.name, "lr": lr, "seed": seed, "test": test}}

    @staticmethod
    def validation_score(result):
        return result["score"]

    @staticmethod
    def run(request, folder):
        config = request["config"]
        score = -abs(math.log10(config["lr"]) + 2) + 0.001 * config["seed"]
        checkpoint.save_json(folder / "results.json", {"score": score, "test": config["test"]})


def test_learning_rate_search_grows_past_an_edge_and_variants_inherit(tmp_path, monkeypatch):
    arms = [Arm("a"), Arm("a, variant", lr_from="a"), Arm("b")]
    chosen = protocol.tune(PeakedTask(), arms, [1e-4, 1e-3], [1000], tmp_path, workers=1)
    assert chosen["a"]["lr"] == 0.01 and sorted(chosen["a"]["scores"]) == [1e-4, 1e-3, 0.01, 0.1]
    assert chosen["a, variant"] == {"lr": 0.01, "from": "a"} and chosen["b"]["lr"] == 0.01
    for results in tmp_path.glob("tuning/*/*/*/results.json"):
        assert json.loads(results.read_text())["test"] is False           # the search never reads test
    runs, diverged, missing = protocol.final(PeakedTask(), arms, chosen, range(3), tmp_path, workers=1)
    assert sorted(runs) == ["a", "a, variant", "b"] and sorted(runs["a"]) == [0, 1, 2]
    assert not diverged and not missing and runs["b"][2]["test"] is True
    # the same call again trains nothing; with a narrower budget the edge rule stops after two steps
    monkeypatch.setattr(PeakedTask, "run", staticmethod(lambda request, folder: pytest.fail("trained again")))
    assert protocol.tune(PeakedTask(), arms, [1e-4, 1e-3], [1000], tmp_path, workers=1) == chosen
    capped = protocol.tune(PeakedTask(), [Arm("c")], [1e-7, 1e-6], [1000], tmp_path, workers=1, extensions=2,
                           report_only=True)
    assert capped == {}                                                    # report-only: nothing ran


def test_settings_are_checked_before_any_work():
    arms = [Arm("adamix"), Arm("adamix, no sharing", lr_from="adamix"), Arm("lora")]
    args = argparse.Namespace(seeds=5, tuning_seeds=1, workers=2, lr_grid="1e-3,3e-3", arms="adamix-no-sharing")
    chosen, grid = protocol.settings(args, arms, (1e-3,))
    assert [a.name for a in chosen] == ["adamix", "adamix, no sharing"] and grid == [1e-3, 3e-3]
    for field, value, message in (("seeds", 0, "--seeds must be at least 1"), ("lr_grid", "1e-3", "at least two"),
                                  ("lr_grid", "fast", "--lr-grid takes"), ("arms", "nope", "unknown arm")):
        with pytest.raises(ValueError, match=message):
            protocol.settings(argparse.Namespace(**{**vars(args), field: value}), arms, (1e-3,))


# ---- the comparisons, end to end ------------------------------------------------------------------------

def write_tsv_task(folder, n_train=24, n_eval=24):
    full = data.load_movie_reviews()
    folder.mkdir(parents=True)
    for name, split, n in (("train", full["train"], n_train), ("dev", full["validation"], n_eval),
                           ("test", full["test"], n_eval)):
        rows = [f"{t}\t{y}" for t, y in zip(split.texts[:n], split.labels[:n])]
        (folder / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def test_nlu_comparison_end_to_end_in_worker_processes(tmp_path):
    task = write_tsv_task(tmp_path / "task")
    out = tmp_path / "compare"
    argv = ["compare", "--model", "random-tiny", "--task", str(task), "--epochs", "1", "--seeds", "2",
            "--lr-grid", "1e-3,3e-3", "--arms", "adapter,adamix-no-consistency", "--out", str(out)]
    cli.main(argv)
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["chosen"]) == {"adapter", "adamix", "adamix, no consistency"}
    verdicts = {(c["left"], c["right"]): c for c in saved["claims"]}
    assert verdicts["adamix", "adapter"]["n"] == 2 and verdicts["adamix", "adamix, no consistency"]["n"] == 2
    assert verdicts["adamix merged", "random routing (mean)"]["n"] == 2
    text = (out / "results.md").read_text()
    assert "| adamix, no consistency | " in text and "Every run of this comparison has finished." in text
    assert text.startswith("**Verdict, claim by claim**") and text.rstrip().endswith("has finished.")
    assert text.index("Terms used below") < text.index("| # | claim |") < text.index("Budget:")
    for figure in ("claims_forest.png", "validation_curves.png", "accuracy_vs_parameters.png", "random_vs_merged.png"):
        assert (out / figure).stat().st_size > 10_000, figure
    run = out / "final" / "adamix" / "seed-1"
    assert (run / "log.txt").is_file() and not (run / "checkpoints").exists()    # ran in a worker; checkpoints removed
    result = json.loads((run / "results.json").read_text())
    assert sum(sum(m["route_counts"]) for m in result["routing"].values()) > 0


def test_e2e_comparison_end_to_end(tmp_path, capsys):
    out = tmp_path / "e2e"
    cli.main(["compare", "--task", "e2e", "--steps", "4", "--eval-every", "2", "--train-size", "16",
              "--validation-size", "2", "--test-size", "2", "--batch-size", "4", "--seeds", "2",
              "--lr-grid", "3e-3,1e-2", "--arms", "lora,adamix-lora", "--workers", "1", "--beam-width", "2",
              "--max-new-tokens", "6", "--num-experts", "2", "--out", str(out)])
    saved = json.loads((out / "results.json").read_text())
    assert saved["speed"]["greedy_cached"] > 0
    pairs = {(c["left"], c["right"]): c for c in saved["claims"] + saved["inference_claims"]}
    assert pairs["adamix-lora", "lora"]["n"] == 2 and pairs["adamix-lora merged", "random routing"]["n"] == 2
    run = json.loads((out / "final" / "adamix-lora" / "seed-0" / "results.json").read_text())
    assert run["config"]["max_grad_norm"] == 0.0 and run["config"]["expert_updates"] == "dense"
    assert "consistency_gradient_norm" in run["history"][0] and len(run["test_loss_by_inference"]["experts"]) == 2
    assert (out / "expert_diagnostics.png").stat().st_size > 10_000
    text = (out / "results.md").read_text()
    assert "The gap, measured" in text and "| adamix-lora | " in text
    assert text.startswith("**Verdict, claim by claim**") and text.index("| # | claim |") < text.index("The gap")
    cli.main(["compare", "--task", "e2e", "--steps", "4", "--eval-every", "2", "--train-size", "16",    # trains nothing,
              "--validation-size", "2", "--test-size", "2", "--batch-size", "4", "--seeds", "2",       # keeps the speed
              "--lr-grid", "3e-3,1e-2", "--arms", "lora,adamix-lora", "--workers", "1", "--beam-width", "2",
              "--max-new-tokens", "6", "--num-experts", "2", "--out", str(out), "--report-only"])
    assert json.loads((out / "results.json").read_text())["speed"] == saved["speed"]
    assert "Decoding speed" in (out / "results.md").read_text()
    for merged in out.glob("final/*/seed-*/merged"):      # as in a fresh clone: weights are not committed
        shutil.rmtree(merged)
    cli.main(["compare", "--task", "e2e", "--steps", "4", "--eval-every", "2", "--train-size", "16",
              "--validation-size", "2", "--test-size", "2", "--batch-size", "4", "--seeds", "2",
              "--lr-grid", "3e-3,1e-2", "--arms", "lora,adamix-lora", "--workers", "1", "--beam-width", "2",
              "--max-new-tokens", "6", "--num-experts", "2", "--out", str(out)])
    assert "decoding speed not measured" in capsys.readouterr().out


def test_one_parser_serves_both_tasks_and_refuses_the_other_tasks_flags():
    args = cli.parse(["train", "--task", "e2e", "--method", "adamix-adapter", "--steps", "3"])
    cfg = config_from_args(args, finetune.NLGConfig(), "train --task e2e")
    assert cfg.method == "adamix" and cfg.steps == 3 and args.run is commands.train_command
    with pytest.raises(ValueError, match=r"--steps: not a flag of `train`"):
        config_from_args(args, TrainConfig(), "train")             # --steps belongs to --task e2e
    with pytest.raises(ValueError, match=r"--epochs: not a flag of `train --task e2e`"):
        commands.train_command(cli.parse(["train", "--task", "e2e", "--epochs", "2"]))
    with pytest.raises(ValueError, match=r"--beam-width: not a flag of `compare` without --task e2e"):
        commands.compare_command(cli.parse(["compare", "--beam-width", "2"]))
    with pytest.raises(ValueError, match=r"--regime: not a flag of `compare --task e2e`"):
        commands.compare_command(cli.parse(["compare", "--task", "e2e", "--regime", "full"]))
    args = cli.parse(["compare", "--task", "e2e", "--seeds", "2"])
    assert args.seeds == 2 and args.run is commands.compare_command
    with pytest.raises(SystemExit, match="--method must be one of adamix, .*, full, .*; got 'nope'"):
        cli.main(["train", "--task", "e2e", "--method", "nope"])


def test_claims_table_reads_as_the_verdicts():
    judged = [report.Claim("1", "A >= B", "a", "b", {0: 0.8, 1: 0.82}, {0: 0.7, 1: 0.71}).judge()]
    table = report.claims_table(judged, scale=100)
    assert "| 1 | A >= B | a vs b | +10.50 |" in table and "**held**" in table


def test_learning_rates_can_come_from_another_comparison(tmp_path):
    arms = [Arm("a"), Arm("a, variant", lr_from="a")]
    args = argparse.Namespace(lr_from=str(tmp_path / "small"), tuning_seeds=1, workers=1, report_only=False)
    with pytest.raises(FileNotFoundError, match="no results.json"):
        protocol.learning_rates(PeakedTask(), arms, [1e-3], args, tmp_path)
    checkpoint.save_json(tmp_path / "small" / "results.json", {"chosen": {"b": {"lr": 0.1}}})
    with pytest.raises(ValueError, match="chose no learning rate for a"):
        protocol.learning_rates(PeakedTask(), arms, [1e-3], args, tmp_path)
    checkpoint.save_json(tmp_path / "small" / "results.json", {"chosen": {"a": {"lr": 0.003, "scores": {}}}})
    chosen = protocol.learning_rates(PeakedTask(), arms, [1e-3], args, tmp_path)
    assert chosen["a"]["lr"] == 0.003 and chosen["a, variant"] == {"lr": 0.003, "from": "a"}
    assert not (tmp_path / "tuning").exists()                              # nothing searched


def test_the_neighbours_suite_shares_the_folder_and_judges_its_papers_claims(tmp_path):
    """compare --suite neighbours in the AdaMix comparison's folder: the arms both have are reused, not
    trained again; its report and page have their own names; a sub-module is chosen on validation."""
    task = write_tsv_task(tmp_path / "task")
    out = tmp_path / "compare"
    common = ["compare", "--model", "random-tiny", "--task", str(task), "--epochs", "1", "--seeds", "2",
              "--lr-grid", "1e-3,3e-3", "--out", str(out), "--workers", "1"]
    cli.main(common + ["--arms", "lora"])
    first = json.loads((out / "final" / "lora" / "seed-0" / "results.json").read_text())
    cli.main(common + ["--suite", "neighbours", "--arms", "lora,adalora,hadamard"])
    assert json.loads((out / "final" / "lora" / "seed-0" / "results.json").read_text()) == first   # reused
    saved = json.loads((out / "neighbours.json").read_text())
    rows = {(c["left"], c["right"]): c for c in saved["claims"]}
    assert rows["adalora", "lora"]["n"] == 2 and rows["adalora", "lora"]["number"] == "A"
    assert rows["hadamard", "adapter"]["kind"] == "equivalent" and rows["hadamard", "adapter"]["n"] == 0
    text = (out / "neighbours.md").read_text()
    assert text.startswith("**Verdict, claim by claim** (the headline claims fixed in docs/plans/neighbours.md")
    assert "| adalora | " in text and (out / "neighbours_accuracy_vs_parameters.png").stat().st_size > 10_000
    assert "**Verdict" in (out / "results.md").read_text()          # the AdaMix report is left as it was


def test_the_neighbours_suite_on_e2e(tmp_path):
    out = tmp_path / "e2e"
    cli.main(["compare", "--task", "e2e", "--suite", "neighbours", "--steps", "4", "--eval-every", "2",
              "--train-size", "16", "--validation-size", "2", "--test-size", "2", "--batch-size", "4", "--seeds", "2",
              "--lr-grid", "3e-3,1e-2", "--arms", "lora,adalora", "--workers", "1", "--beam-width", "2",
              "--max-new-tokens", "6", "--out", str(out)])
    rows = {(c["left"], c["right"]): c for c in json.loads((out / "neighbours.json").read_text())["claims"]}
    assert rows["adalora", "lora"]["n"] == 2 and rows["adamix-lora", "prefix"]["n"] == 0
    text = (out / "neighbours.md").read_text()
    assert "| adalora | " in text and "No learning rate chosen yet" not in text
    assert (out / "neighbours_bleu_vs_parameters.png").stat().st_size > 10_000


def test_unipelt_is_judged_against_the_sub_module_best_on_validation_not_on_test():
    from tinymix.experiments import neighbours
    run = lambda validation, test: {"validation_accuracy": validation, "merged_test_accuracy": test}
    runs = {"adapter": {s: run(0.80, 0.70) for s in range(3)},     # best on validation, worst on test
            "lora": {s: run(0.70, 0.90) for s in range(3)},
            "prefix": {s: run(0.60, 0.80) for s in range(3)},
            "unipelt": {s: run(0.75, 0.75 + 0.01 * s) for s in range(3)}}
    assert neighbours.best_on_validation(runs, ("adapter", "lora", "prefix")) == "adapter"
    row = next(c for c in neighbours.claims(runs) if c["left"] == "unipelt" and c["number"] == "U")
    assert row["right"] == "adapter (best on validation)" and row["mean"] > 0
    del runs["prefix"]                                              # a sub-module not run yet: no row yet
    row = next(c for c in neighbours.claims(runs) if c["left"] == "unipelt" and c["number"] == "U")
    assert row["n"] == 0 and row["verdict"] == "not enough seeds"


def test_the_few_shot_regime_pairs_splits_reads_no_validation_and_takes_its_rates(tmp_path):
    task = write_tsv_task(tmp_path / "task", n_train=40)
    source = tmp_path / "small"
    source.mkdir()
    (source / "results.json").write_text(json.dumps({"chosen": {m: {"lr": 3e-3} for m in nlu.MAIN}}))
    out = tmp_path / "fewshot"
    argv = ["compare", "--regime", "fewshot", "--model", "random-tiny", "--task", str(task), "--epochs", "2",
            "--train-size", "8", "--seeds", "2", "--workers", "1", "--arms", "adapter,adamix", "--out", str(out)]
    with pytest.raises(ValueError, match="--regime fewshot reads no validation.*--lr-from"):
        commands.compare_command(cli.parse(argv))
    cli.main(argv + ["--lr-from", str(source)])
    for seed in (0, 1):
        configs = [json.loads((out / "final" / arm / f"seed-{seed}" / "request.json").read_text())["config"]
                   for arm in ("adapter", "adamix")]
        assert all(c["train_sample"] == seed and c["select_on_validation"] is False and c["batch_size"] == 4
                   and c["lr"] == 3e-3 for c in configs)
        result = json.loads((out / "final" / "adapter" / f"seed-{seed}" / "results.json").read_text())
        assert result["validation_accuracy"] is None and result["best_epoch"] == 2
    text = (out / "results.md").read_text()
    assert "Spread across splits" in text and "not read" in text and "4x" not in text.split("Budget:")[0]
    assert "Rates: adapter: 0.003" in text


def test_a_few_shot_split_is_its_own_draw_and_no_validation_is_read(tmp_path, monkeypatch):
    from tinymix import train as training
    from test_train import tiny_config, tiny_splits
    one = lambda split, seed=0: training.sample_indices(100, tiny_config(train_size=10, train_sample=split, seed=seed))
    assert one(3) == one(3, seed=9) and one(3) != one(4) and len(set(one(3))) == 10
    splits = tiny_splits()
    read = []
    real = training.evaluate
    monkeypatch.setattr(training, "evaluate",
                        lambda model, tok, split, *a, **k: read.append(split) or real(model, tok, split, *a, **k))
    from tinymix import runfolder
    saved, real_save = [], runfolder.RunFolder.save_checkpoint
    monkeypatch.setattr(runfolder.RunFolder, "save_checkpoint",
                        lambda self, model, opt, state, *a: saved.append(state["epoch"]) or real_save(self, model, opt, state, *a))
    result = training.train(tiny_config(tmp_path, epochs=3, train_size=12, train_sample=1, select_on_validation=False,
                                        checkpoint_every=2), splits)
    assert all(split is not splits["validation"] for split in read) and read      # only test was read
    assert result["validation_accuracy"] is None and result["best_epoch"] == 3
    assert saved == [2, 3]                              # every 2nd epoch, and the last
    with pytest.raises(ValueError, match="--train-sample draws --train-size sentences at random"):
        tiny_config(train_sample=2)


def test_a_killed_comparison_stops_its_workers_too(tmp_path):
    """SIGTERM to `compare` (kill, a job scheduler) ends it like Ctrl-C: no worker trains on as an orphan."""
    import os
    import signal
    import subprocess
    import sys
    import time
    task = write_tsv_task(tmp_path / "task", n_train=1000, n_eval=4)
    out = tmp_path / "compare"
    process = subprocess.Popen([sys.executable, "-m", "tinymix", "compare", "--model", "random-tiny", "--task", str(task),
                                "--epochs", "50", "--seeds", "1", "--lr-grid", "1e-3,3e-3", "--arms", "adapter",
                                "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = lambda: list(out.glob("tuning/adapter/*/seed-1000/log.txt"))
    deadline = time.time() + 120
    while len(logs()) < 2 and time.time() < deadline:      # both workers started
        time.sleep(0.2)
    workers = lambda: [p for p in os.listdir("/proc") if p.isdigit() and str(out) in
                       open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace").replace("\0", " ")
                       and "tinymix.cli.worker" in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")]
    try:
        assert len(workers()) == 2
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130 and "Traceback" not in err
        assert workers() == []
    finally:                                    # a failing run of this test leaves no orphan either
        for pid in workers():
            os.kill(int(pid), signal.SIGKILL)


def test_a_claim_gets_a_test_resampled_interval_only_where_both_arms_saved_their_examples():
    rng = np.random.default_rng(0)
    right = {s: "".join(map(str, (rng.random(400) < 0.80).astype(int))) for s in range(4)}
    left = {s: "".join(map(str, (rng.random(400) < 0.85).astype(int))) for s in range(4)}
    score = lambda rows: {s: r.count("1") / len(r) for s, r in rows.items()}
    runs = {"a": {s: {"merged_test_accuracy": score(left)[s], "test_correct": left[s]} for s in left},
            "b": {s: {"merged_test_accuracy": score(right)[s], "test_correct": right[s]} for s in right},
            "c": {s: {"merged_test_accuracy": score(right)[s]} for s in right}}           # saved no examples
    claims = report.attach_test_rows([report.Claim("1", "a >= b", "a", "b (best on validation)", score(left), score(right)),
                                      report.Claim("1", "a >= c", "a", "c", score(left), score(right))], runs)
    with_rows, without = [c.judge() for c in claims]
    b = with_rows["bootstrap"]
    assert without["bootstrap"] is None and b["resamples"] == 2000
    assert b["low"] < with_rows["mean"] < b["high"]
    # test sampling adds variance: wider than the seed-only t interval would be without it at 400 sentences
    assert b["high"] - b["low"] > 0.02
    table = report.claims_table([with_rows, without]).splitlines()
    assert "95% CI, test resampled too" in table[0] and table[-1].split(" | ")[5] == "-"   # c's row: no interval
    assert "test resampled" not in report.claims_table([without])


def test_the_merging_suite_merges_each_runs_experts_by_every_operator_and_judges_them_against_the_mean(tmp_path):
    """compare --suite merging: one training per seed; every operator's lambda chosen on validation; the
    claims compare two merges of the SAME experts; the M = 4 runs reproduce the AdaMix comparison's."""
    task = write_tsv_task(tmp_path / "task")
    small, out = tmp_path / "small", tmp_path / "merging"
    common = ["--model", "random-tiny", "--task", str(task), "--epochs", "1", "--seeds", "2", "--workers", "1"]
    cli.main(["compare", *common, "--lr-grid", "1e-3,3e-3", "--arms", "adamix,adamix-lora", "--random-runs", "1",
              "--out", str(small)])
    cli.main(["compare", *common, "--suite", "merging", "--lr-from", str(small), "--out", str(out),
              "--arms", "adamix,adamix-lora"])
    result = json.loads((out / "final" / "adamix" / "seed-0" / "results.json").read_text())
    found = result["merge_operators"]
    assert set(found) == {"mean", "task-arithmetic", "ties", "pcb"} and result["task_vectors"] == 4
    ties = found["ties"]
    assert [t["scale"] for t in ties["grid"]] == [0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0]
    assert ties["validation_accuracy"] == max(t["score"] for t in ties["grid"])
    assert len(ties["test_correct"]) == 24 and ties["test_accuracy"] == ties["test_correct"].count("1") / 24
    assert [t["scale"] for t in found["task-arithmetic"]["grid"]][3] == 0.25        # 1/M: the mean
    lora = json.loads((out / "final" / "adamix-lora" / "seed-1" / "results.json").read_text())["merge_operators"]
    assert 0 <= lora["pcb"]["rank_r_error"]["max"] <= 1 and found["pcb"]["rank_r_error"] is None
    saved = json.loads((out / "merging.json").read_text())
    rows = {c["text"]: c for c in saved["claims"]}
    assert rows["adamix: TIES >= the mean"]["n"] == 2 and rows["adamix-lora: PCB >= TIES"]["n"] == 2
    assert rows["adamix, 8 experts: PCB >= the mean"]["n"] == 0 and len(rows) == 16
    text = (out / "merging.md").read_text()
    assert text.startswith("**Verdict, claim by claim** (the claims fixed in docs/plans/merging.md")
    assert "Reproduction: 4 run(s) deploy exactly the test accuracy" in text      # the same experts as there
    there = small / "final" / "adamix" / "seed-1" / "results.json"
    checkpoint.save_json(there, {**json.loads(there.read_text()), "merged_test_accuracy": 0.125})
    cli.main(["compare", *common, "--suite", "merging", "--lr-from", str(small), "--out", str(out),
              "--arms", "adamix,adamix-lora", "--report-only"])
    assert "Reproduction: 3 run(s) deploy exactly" in (out / "merging.md").read_text()
    assert "1 differ: adamix seed 1:" in (out / "merging.md").read_text()
    with pytest.raises(SystemExit, match="--suite merging runs the small regime"):
        cli.main(["compare", *common, "--suite", "merging", "--regime", "full", "--lr-from", str(small),
                  "--out", str(out)])


def test_the_porting_suite_carries_v1_patches_to_v2_and_counts_negative_flips(tmp_path, monkeypatch):
    """compare --task e2e --suite porting: the v1 arms' patches are decoded on v2 without training and v2 alone
    is decoded too; every run keeps its patch; flips and the lemma come from the saved files."""
    from tinymix.experiments import porting
    v2 = tmp_path / "v2"
    cli.main(["pretrain-gpt", "--fast", "--continue-from", "data/tiny_gpt", "--out", str(v2)])
    monkeypatch.setattr(porting, "V2", str(v2))
    out = tmp_path / "porting"
    common = ["compare", "--task", "e2e", "--suite", "porting", "--steps", "4", "--eval-every", "2", "--train-size", "16",
              "--validation-size", "2", "--test-size", "3", "--batch-size", "4", "--seeds", "2", "--lr-grid", "3e-3,1e-2",
              "--workers", "1", "--beam-width", "2", "--max-new-tokens", "6", "--out", str(out)]
    cli.main(common)
    lora = json.loads((out / "final" / "lora" / "seed-0" / "results.json").read_text())
    assert set(lora["ported"]) == {"validation", "test"} and len(lora["ported"]["test"]["slots_right"]) == 3
    assert len(lora["slots_right"]) == 3 and set(lora["slots_right"]) <= {"0", "1"}
    retrained = json.loads((out / "final" / "lora-on-v2" / "seed-0" / "results.json").read_text())
    assert "ported" not in retrained and retrained["config"]["model"] == str(v2)
    assert (out / "final" / "lora-on-v2" / "seed-1" / "patch.safetensors").is_file()
    saved = json.loads((out / "porting.json").read_text())
    rows = {c["text"]: c for c in saved["claims"]}
    assert rows["v2 + v1's patch ~ LoRA re-trained on v2"]["n"] == 2 and len(rows) == 6
    assert rows["the compatibility adapter flips no more MRs than re-training (NFR)"]["n"] == 2
    compatible = json.loads((out / "final" / "lora-on-v2-compatible" / "seed-0" / "results.json").read_text())
    assert compatible["config"]["model"] == str(v2) and len(compatible["slots_right"]) == 3 and "ported" not in compatible
    assert set(saved["lemma"]) == {"0", "1"} and 0 < saved["lemma"]["0"]["relative_difference"]
    assert -1 <= saved["lemma"]["0"]["cosine"] <= 1
    # v2 alone is the base with no patch: the same outputs for every seed
    adamix = json.loads((out / "final" / "adamix-lora" / "seed-1" / "results.json").read_text())
    assert adamix["v2_alone"]["test"]["outputs"] == lora["v2_alone"]["test"]["outputs"]
    assert porting.flips("1101", "0111") == 0.25
    with pytest.raises(SystemExit, match="add --task e2e"):
        cli.main(["compare", "--suite", "porting", "--out", str(out)])


def test_the_surgery_suite_measures_each_seed_once_and_rebuilds_its_report_from_the_files(tmp_path, monkeypatch):
    from tinymix.experiments import surgery
    monkeypatch.setattr(surgery, "PROMPTS", {"validation": 8, "test": 10})
    monkeypatch.setattr(surgery, "PROBE_TEXTS", 20)
    monkeypatch.setattr(surgery, "RATIOS", (0.5, 1.0))
    out = tmp_path / "surgery"
    cli.main(["compare", "--task", "e2e", "--suite", "surgery", "--seeds", "2", "--out", str(out)])
    first = json.loads((out / "seed-0" / "results.json").read_text())
    assert first["rows"] == 95 and first["r"] in (0.0, 0.5, 1.0) and len(first["validation"]["tried"]) == 2
    assert 0 < first["test_before"]["preference"] < 1 and set(first["test_after"]["loss"]) == {"shakespeare", "e2e_held_out"}
    rows = {c["text"]: c for c in json.loads((out / "surgery.json").read_text())["claims"]}
    assert rows["surgery lowers the low-rating preference"]["n"] == 2 and len(rows) == 4
    (out / "surgery.md").unlink()
    cli.main(["compare", "--task", "e2e", "--suite", "surgery", "--seeds", "2", "--out", str(out), "--report-only"])
    assert "low-rating preference, before" in (out / "surgery.md").read_text()
    assert json.loads((out / "seed-0" / "results.json").read_text()) == first           # not measured again
    with pytest.raises(SystemExit, match="add --task e2e"):
        cli.main(["compare", "--suite", "surgery", "--out", str(out)])


def test_the_domains_suite_trains_an_expert_per_domain_and_merges_them_per_seed(tmp_path, monkeypatch):
    """compare --suite domains: four experts and the multi-domain LoRA per seed, then a merge job per seed;
    an expert deployed from its task vector scores exactly what its own run scored."""
    for name, size in (("TEST_SIZE", 40), ("VALIDATION_SIZE", 20), ("DOMAIN_TEST_SIZE", 30), ("DOMAIN_VALIDATION_SIZE", 20)):
        monkeypatch.setattr(data, name, size)
    out = tmp_path / "domains"
    cli.main(["compare", "--suite", "domains", "--model", "random-tiny", "--epochs", "1", "--train-size", "8",
              "--seeds", "2", "--lr-grid", "1e-3,3e-3", "--workers", "1", "--out", str(out)])
    multi = json.loads((out / "final" / "lora-all-domains" / "seed-0" / "results.json").read_text())
    assert multi["config"]["train_size"] == 32 and len(multi["test_correct"]) == 40 + 3 * 30
    merged = json.loads((out / "merges" / "seed-1" / "results.json").read_text())
    for domain, arm in (("movies", "lora"), ("nyt", "lora-nyt")):
        own = json.loads((out / "final" / arm / "seed-1" / "results.json").read_text())["merged_test_accuracy"]
        assert merged["experts"][domain][domain] == own
    assert set(merged["operators"]) == {"mean", "task-arithmetic", "ties", "pcb"} and len(merged["cosines"]) == 6
    ta = merged["operators"]["task-arithmetic"]
    assert ta["validation"] == max(t["score"] for t in ta["grid"]) and [t["scale"] for t in ta["grid"]][3] == 0.25
    rows = {c["text"]: c for c in json.loads((out / "domains.json").read_text())["claims"]}
    assert rows["PCB >= TIES"]["n"] == 2 and len(rows) == 3
    assert "| one LoRA on all four domains |" in (out / "domains.md").read_text()


def test_every_arm_of_a_seed_starts_from_the_head_the_merge_job_rebuilds(tmp_path):
    """The domains merge job takes an expert's head task vector against the head rebuilt by seeding and
    building the model as train does: a run that barely moves (lr 1e-12) keeps exactly that head."""
    from tinymix import backend
    from tinymix.train import TrainConfig, build_model
    cli.main(["train", "--task", "amazon", "--method", "lora", "--model", "random-tiny", "--lr", "1e-12", "--epochs", "1",
              "--train-size", "8", "--seed", "3", "--out", str(tmp_path / "run")])
    backend.manual_seed(3)
    model, _ = build_model(TrainConfig(method="lora", model="random-tiny", seed=3, task="nyt"), 2)
    saved = checkpoint.load_arrays(tmp_path / "run" / "merged" / "adapter_model.safetensors")
    assert np.abs(np.asarray(saved["classifier.weight"]) - backend.to_numpy(model.classifier.weight.data)).max() < 1e-7


def test_the_mos_suite_streams_the_domains_in_each_seeds_order_and_judges_the_parts(tmp_path, monkeypatch):
    from tinymix.experiments import mos
    monkeypatch.setattr(mos, "TRAIN", 12)
    monkeypatch.setattr(mos, "TEST", 6)
    monkeypatch.setattr(mos, "EPOCHS", 1)
    out = tmp_path / "mos"
    cli.main(["compare", "--suite", "mos", "--model", "random-tiny", "--seeds", "2", "--workers", "1", "--out", str(out)])
    run = json.loads((out / "final" / "mos" / "seed-1" / "results.json").read_text())
    assert sorted(run["order"]) == sorted(data.DOMAINS) and run["order"] == mos.order_of(1) != mos.order_of(0)
    assert len(run["after_task"]) == 4 and run["final"] == run["after_task"][-1]
    assert run["average_incremental"] == pytest.approx(sum(run["after_task"]) / 4)
    assert all(0 <= a <= 1 for a in run["after_task"] + run["retrieval"])
    rows = {c["text"]: c for c in json.loads((out / "mos.json").read_text())["claims"]}
    assert rows["MOS >= one adapter trained in turn"]["n"] == 2 and len(rows) == 4
    assert "| prototypes |" in (out / "mos.md").read_text()


class _Scripted:
    """A task whose validation score is a known function of the recipe: -(log10 lr + 3)^2, +0.1 with clipping."""
    name, defaults = "scripted", {}

    def request(self, arm, lr, seed, test):
        return {"task": self.name, "lr": lr, "seed": seed, "test": test, "overrides": arm.overrides}

    @staticmethod
    def run(request, folder):
        score = -(math.log10(request["lr"]) + 3) ** 2 + (0.1 if request["overrides"].get("max_grad_norm") else 0.0)
        checkpoint.save_json(folder / "results.json", {"validation_accuracy": score, "seed": request["seed"]})

    @staticmethod
    def validation_score(result):
        return result["validation_accuracy"]

    def space(self, arm):
        from tinymix.experiments import protocol
        return protocol.recipe_space(arm, (1e-4, 3e-4, 1e-3, 3e-3), {"consistency_weight": 1.0, "max_grad_norm": 0.0})


def test_tuning_by_search_spends_the_same_budget_on_every_arm_and_finds_a_known_optimum(tmp_path):
    from tinymix.experiments import protocol
    from tinymix.experiments.protocol import Arm
    arms = [Arm("lora", {"method": "lora"}), Arm("adamix", {"method": "adamix"}),
            Arm("adamix, no consistency", {"method": "adamix", "consistency_weight": 0.0}, lr_from="adamix")]
    chosen = protocol.tune_by_search(_Scripted(), arms, range(1000, 1003), tmp_path, 1, budget=8)
    for name in ("lora", "adamix"):
        found = chosen[name]
        assert len(found["evaluations"]) == 8 and found["search"] == "mads" and found["complete"]
        assert found["overrides"]["max_grad_norm"] == 1.0 and abs(math.log10(found["lr"]) + 3) < 0.35
    assert "consistency_weight" in chosen["adamix"]["overrides"] and "consistency_weight" not in chosen["lora"]["overrides"]
    assert len(list((tmp_path / "tuning" / "lora").glob("*/seed-1002/results.json"))) == 8     # every tuning seed
    assert chosen["adamix, no consistency"]["from"] == "adamix"
    runs, _, _ = protocol.final(_Scripted(), arms, chosen, range(1), tmp_path, 1)
    request = json.loads((tmp_path / "final" / "adamix-no-consistency" / "seed-0" / "request.json").read_text())
    assert request["overrides"]["consistency_weight"] == 0.0 and request["overrides"]["max_grad_norm"] == 1.0
    again = protocol.tune_by_search(_Scripted(), arms, range(1000, 1003), tmp_path, 1, budget=8, report_only=True)
    assert again["lora"]["evaluations"] == chosen["lora"]["evaluations"]             # reused, not run again
    with pytest.raises(SystemExit, match="--tuning-budget must be at least 1"):
        cli.main(["compare", "--model", "random-tiny", "--tuning", "mads", "--tuning-budget", "0", "--out", str(tmp_path / "x")])
