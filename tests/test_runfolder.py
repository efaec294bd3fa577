"""A run folder never loses work: a kill at every step of a checkpoint save, then --resume, gives the
run an uninterrupted one gives; one writer at a time; a folder holding a run is not overwritten
silently. On a tiny random encoder ("random-tiny"), so a whole run takes about a second."""
import json
import os
import shutil

import pytest

from tinymix.store import checkpoint, files
from tinymix import data, runfolder
from tinymix.train import TrainConfig, train

STEPS = ("open", "fsync", "replace", "rename", "unlink", "rmdir", "mkdir")   # what a save does to the disk


def tiny_splits(n_train=16, n_eval=8):
    full = data.load_movie_reviews()
    cut = lambda s, n: data.Split(s.texts[:n], s.labels[:n])
    return {"train": cut(full["train"], n_train), "validation": cut(full["validation"], n_eval),
            "test": cut(full["test"], n_eval)}


def tiny_config(out, **overrides):
    settings = dict(model="random-tiny", epochs=4, batch_size=8, eval_batch_size=8, lr=1e-2, progress=False,
                    out=str(out))
    return TrainConfig(**{**settings, **overrides})


class Crash(Exception):
    pass


def counting_disk_steps(monkeypatch):
    """Wrap the os calls a save makes; while counts["on"], count them, and make step counts["fail_at"]
    raise Crash (counts["how"] "raise") or end the process on the spot ("kill": os._exit, so no
    clean-up runs, as after SIGKILL)."""
    counts = {"on": False, "n": 0, "fail_at": None, "how": "raise"}
    for name in STEPS:
        real = getattr(os, name)

        def step(*args, _real=real, **kwargs):
            if counts["on"]:
                counts["n"] += 1
                if counts["n"] == counts["fail_at"]:
                    if counts["how"] == "kill":
                        os._exit(9)
                    raise Crash
            return _real(*args, **kwargs)
        monkeypatch.setattr(os, name, step)
    return counts


def outcome(result, run):
    """What must not depend on an interruption: losses, choices, accuracy, and the saved weights."""
    read = lambda path: (run / path).read_bytes()
    return (result["losses"], result["history"], result["best_epoch"], result["validation_accuracy"],
            result["test_accuracy"], read("merged/adapter_model.safetensors"), read("best/adapter_model.safetensors"))


def leftovers(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if files.is_temporary(p))


def test_a_kill_at_every_step_of_a_checkpoint_save_then_resume_gives_the_uninterrupted_run(tmp_path, monkeypatch):
    """Epoch 3's save of a 4-epoch run, interrupted at each of its disk steps in turn -- by a kill
    (the process ends on the spot) and by an exception (clean-up handlers run) -- then resumed: every
    resumed run equals the uninterrupted one, bit for bit, and leaves no leftovers."""
    splits = tiny_splits()
    reference_run = tmp_path / "straight"
    reference = outcome(train(tiny_config(reference_run), splits), reference_run)

    counts = counting_disk_steps(monkeypatch)
    real_save = runfolder.RunFolder.save_checkpoint
    cases = []                                  # (mode, step, folder with the interrupted save)

    def save_checkpoint(self, model, optimizer, state, method_state=None):
        if state["epoch"] != 3:
            return real_save(self, model, optimizer, state, method_state)
        original = self.path
        self.path = tmp_path / "dry-run"        # a dry run, on a copy, counts the steps of this save
        shutil.copytree(original, self.path)
        counts["on"], counts["n"] = True, 0
        real_save(self, model, optimizer, state, method_state)
        counts["on"], total, self.path = False, counts["n"], original
        for how in ("kill", "raise"):
            for step in range(1, total + 1):
                copy = tmp_path / f"{how}-{step:02d}"
                shutil.copytree(self.path, copy)
                child = os.fork()
                if child == 0:                  # the child saves into the copy and dies at `step`
                    counts.update(on=True, n=0, fail_at=step, how=how)
                    self.path = copy
                    try:
                        real_save(self, model, optimizer, state, method_state)
                    except Crash:
                        os._exit(3)
                    os._exit(0)
                _, status = os.waitpid(child, 0)
                assert os.waitstatus_to_exitcode(status) == (9 if how == "kill" else 3), (how, step)
                cases.append((how, step, copy))
        raise Crash                             # this process's own run ends here
    monkeypatch.setattr(runfolder.RunFolder, "save_checkpoint", save_checkpoint)
    with pytest.raises(Crash):
        train(tiny_config(tmp_path / "interrupted"), splits)
    monkeypatch.undo()                          # the real os calls and the real save from here on

    resumed_from = {}
    for how, step, run in cases:
        newest = runfolder.RunFolder(run).newest()
        resumed_from[(how, step)] = int(newest.name.removeprefix("epoch-"))
        result = train(tiny_config(run, resume=True), splits)
        assert outcome(result, run) == reference, (how, step)
        assert leftovers(run) == [], (how, step)
        kept = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert kept == sorted({f"epoch-{4:04d}", f"epoch-{result['best_epoch']:04d}"}), (how, step, kept)
    total = len(cases) // 2
    assert total > 30                           # every file, flush, rename and removal of the save
    # before the manifest is on disk the run resumes after epoch 2, from then on after epoch 3
    for how in ("kill", "raise"):
        epochs = [resumed_from[(how, step)] for step in range(1, total + 1)]
        assert epochs == sorted(epochs) and epochs[0] == 2 and epochs[-1] == 3, (how, epochs)
    report = {how: {"steps": total, "resumed_after_epoch_2": [resumed_from[(how, s)] for s in range(1, total + 1)].count(2)}
              for how in ("kill", "raise")}
    print(json.dumps(report))


def test_unfinished_checkpoints_are_removed_and_a_damaged_one_is_skipped_not_deleted(tmp_path, capsys):
    splits = tiny_splits()
    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), splits)
    checkpoints = run / "checkpoints"
    (checkpoints / "epoch-0003").mkdir()                       # a save killed before its manifest
    (checkpoints / "epoch-0003" / "state.json").write_text("{}")
    (run / ".results.json.0badcafe.tmp").write_text("half")    # a write killed before its rename
    found = runfolder.RunFolder(run)
    *older, damaged = found.complete()          # epoch 1 is kept if it was the best epoch
    (damaged / "state.json").write_text((damaged / "state.json").read_text().replace('"epoch": 2', '"epoch": 5'))
    found.repair()
    out = capsys.readouterr().out
    assert "removed" in out and "epoch-0003" in out and not (checkpoints / "epoch-0003").exists()
    assert leftovers(run) == [] and found.complete() == older   # the older complete one survived repair
    assert found.newest() == (older[-1] if older else None)    # the newest COMPLETE one
    assert "skipping" in capsys.readouterr().out and damaged.is_dir()   # reported, kept


def test_two_runs_in_one_folder_the_second_is_refused(tmp_path):
    run = tmp_path / "run"
    with files.FolderLock(run):                 # as a run in another process holds it
        with pytest.raises(files.FolderBusy, match=rf"{run} is in use by a training run in another process"):
            train(tiny_config(run, epochs=1), tiny_splits())
    assert sorted(p.name for p in run.iterdir()) == [".lock"]   # nothing written by the refused run


def test_a_killed_runs_lock_does_not_block_the_next_run(tmp_path):
    run = tmp_path / "run"
    child = os.fork()
    if child == 0:
        files.FolderLock(run).acquire()
        os._exit(9)                             # killed while holding the lock
    os.waitpid(child, 0)
    assert (run / ".lock").read_text().strip() == str(child)
    train(tiny_config(run, epochs=1), tiny_splits())


def test_a_fresh_run_into_a_folder_holding_a_run_is_refused_unless_overwrite(tmp_path):
    splits = tiny_splits()
    run = tmp_path / "run"
    first = train(tiny_config(run, epochs=1, method="lora"), splits)
    (run / "my_notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ValueError, match=r"holds a run already: add --resume to continue it, --overwrite"):
        train(tiny_config(run, epochs=1, method="adapter"), splits)
    with pytest.raises(ValueError, match="--lr must be a number >= 0, got nan"):
        train(tiny_config(run, epochs=1, lr=float("nan"), overwrite=True), splits)
    bad_labels = {**splits, "test": data.Split(["x"], [7])}
    with pytest.raises(ValueError, match="test split has labels"):
        train(tiny_config(run, epochs=1, overwrite=True), bad_labels)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before
    # the run survived all three: --resume with its settings still works
    again = train(tiny_config(run, epochs=1, method="lora", resume=True), splits)
    assert again["test_accuracy"] == first["test_accuracy"]
    replaced = train(tiny_config(run, epochs=1, method="adapter", overwrite=True), splits)
    assert checkpoint.load_json(run / "results.json")["config"]["method"] == "adapter"
    assert replaced["config_history"][0]["config"]["method"] == "adapter"
    assert (run / "my_notes.txt").read_text() == "mine"        # only a run's own files are replaced


def test_resume_may_change_only_some_settings_and_records_each_change(tmp_path, capsys):
    splits = tiny_splits()
    run = tmp_path / "run"
    train(tiny_config(run, epochs=2), splits)
    with pytest.raises(ValueError, match=r"other settings.*'batch_size': \(8, 4\)"):
        train(tiny_config(run, epochs=3, batch_size=4, resume=True), splits)
    before = {name: (run / name).read_bytes() for name in ("config.json", "config_history.json")}
    with pytest.raises(ValueError, match="after epoch 2, but --epochs is 1"):
        train(tiny_config(run, epochs=1, resume=True), splits)
    assert {name: (run / name).read_bytes() for name in before} == before    # a refused resume records nothing
    with pytest.raises(ValueError, match="--resume continues the run .* --overwrite replaces it"):
        tiny_config(run, resume=True, overwrite=True)
    result = train(tiny_config(run, epochs=3, lr=1e-3, resume=True), splits)
    assert "resuming with changed settings: --epochs 3 (was 2), --lr 0.001 (was 0.01)" in capsys.readouterr().out
    history = checkpoint.load_json(run / "config_history.json")
    assert history == result["config_history"]
    assert [h["started"] for h in history] == ["fresh", "resume after epoch 2"]
    assert history[1]["changed"] == {"epochs": [2, 3], "lr": [1e-2, 1e-3]}
    assert checkpoint.load_json(run / "config.json")["lr"] == 1e-3


@pytest.mark.parametrize("layout", ["last", "mid-swap", "unfinished last.new"])
def test_a_checkpoint_in_the_layout_of_an_earlier_tinymix_is_taken_over_and_resumed(tmp_path, layout, monkeypatch):
    """Runs interrupted under the earlier layout (last/, best/; last.new/ and last.old/ while swapping)
    resume with --resume and give the uninterrupted run."""
    splits = tiny_splits()
    reference = outcome(train(tiny_config(tmp_path / "straight"), splits), tmp_path / "straight")
    run = tmp_path / "run"
    real_save = runfolder.RunFolder.save_checkpoint

    def stop_after_epoch_2(self, model, optimizer, state, method_state=None):
        real_save(self, model, optimizer, state, method_state)
        if state["epoch"] == 2:
            raise Crash
    with monkeypatch.context() as patch:
        patch.setattr(runfolder.RunFolder, "save_checkpoint", stop_after_epoch_2)
        with pytest.raises(Crash):
            train(tiny_config(run), splits)
    newest = run / "checkpoints" / "epoch-0002"
    best_epoch = checkpoint.load_json(newest / "state.json")["best_epoch"]
    shutil.copytree(run / "checkpoints" / f"epoch-{best_epoch:04d}", run / "best",   # the old best/ folder
                    ignore=shutil.ignore_patterns("optimizer.safetensors", "state.json", "manifest.json"))
    (newest / "manifest.json").unlink()
    (run / "config_history.json").unlink()
    if layout == "last":
        newest.rename(run / "last")
    elif layout == "mid-swap":                  # killed between last -> last.old and last.new -> last
        shutil.copytree(newest, run / "last.old")
        newest.rename(run / "last.new")
    else:                                       # killed while writing last.new (state.json comes last)
        shutil.copytree(newest, run / "last.new", ignore=shutil.ignore_patterns("state.json"))
        newest.rename(run / "last")
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(ValueError, match="holds a run already"):
        train(tiny_config(run), splits)
    result = train(tiny_config(run, resume=True), splits)
    assert outcome(result, run) == reference
    assert not [p for p in run.iterdir() if p.name.startswith("last")]


def test_resume_hint_names_the_checkpoint_only_when_there_is_one(tmp_path):
    run = tmp_path / "run"
    assert runfolder.resume_hint("") == "nothing was saved (no --out folder)"
    assert runfolder.resume_hint(str(run)) == f"nothing was saved in {run} yet"
    train(tiny_config(run, epochs=1), tiny_splits())
    assert runfolder.resume_hint(str(run), "main") == (
        f"the last complete checkpoint is {run / 'checkpoints' / 'epoch-0001'} (after epoch 1); continue with: "
        f"python3 -m tinymix main --out {run} --resume")


def test_a_file_hash_read_in_blocks_is_the_hash_of_its_bytes(tmp_path):
    import hashlib
    path = tmp_path / "weights.bin"
    data = bytes(range(256)) * (3 * 4096) + b"tail!"          # 3 MiB and 5 bytes: blocks plus a partial one
    path.write_bytes(data)
    assert files.sha256(path) == hashlib.sha256(data).hexdigest()
    path.write_bytes(b"")
    assert files.sha256(path) == hashlib.sha256(b"").hexdigest()
