"""Where `pretrain-gpt` writes: the shipped data/tiny_gpt/ only when asked, a folder that holds a
checkpoint only with --overwrite, and always the three files as one set, even when killed."""
import hashlib
import os
import shutil

import pytest

from tinymix import cli, pretrained
from tinymix.e2e import gpt_folder

STEPS = ("open", "fsync", "replace", "rename", "unlink", "rmdir", "mkdir")


def fingerprint(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_smoke_run_goes_elsewhere_and_the_shipped_checkpoint_is_untouched(tmp_path, monkeypatch):
    shipped = fingerprint(pretrained.TINY_GPT_DIR)
    monkeypatch.chdir(tmp_path)
    cli.run(["pretrain-gpt", "--fast"])
    assert gpt_folder.is_checkpoint(tmp_path / "runs" / "tiny_gpt_fast")
    assert "--out runs/tiny_gpt_fast" in gpt_folder.check(tmp_path / "runs" / "tiny_gpt_fast")["training"]["command"]
    with pytest.raises(ValueError, match="holds a tiny GPT checkpoint already: add --overwrite"):
        cli.run(["pretrain-gpt", "--fast"])
    with pytest.raises(ValueError, match="a --fast smoke run never replaces the shipped checkpoint"):
        cli.run(["pretrain-gpt", "--fast", "--out", str(pretrained.TINY_GPT_DIR), "--overwrite"])
    with pytest.raises(ValueError, match=r"holds a tiny GPT checkpoint already \(the one tinymix ships\): add --overwrite"):
        cli.run(["pretrain-gpt", "--steps", "1", "--out", str(pretrained.TINY_GPT_DIR)])
    assert fingerprint(pretrained.TINY_GPT_DIR) == shipped
    assert not list(pretrained.TINY_GPT_DIR.parent.glob(".tiny_gpt.*"))


def test_overwrite_replaces_the_set(tmp_path):
    out = tmp_path / "gpt"
    cli.run(["pretrain-gpt", "--fast", "--out", str(out)])
    first = fingerprint(out)
    cli.run(["pretrain-gpt", "--fast", "--seed", "1", "--out", str(out), "--overwrite"])
    second = fingerprint(out)
    assert set(second) == set(gpt_folder.FILES) and all(second[name] != first[name] for name in ("model.safetensors",))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".gpt.lock", "gpt"]


def _writer(tag):
    def save(folder):
        for name in gpt_folder.FILES:
            (folder / name).write_text(f"{tag} {name}")
    return save


def test_a_kill_at_every_step_of_replacing_a_checkpoint_leaves_one_whole_set(tmp_path, monkeypatch):
    """write_set killed at each of its disk steps (the process ends on the spot): afterwards the folder
    holds the old set or the new one, whole, once the next write_set's repair has run."""
    old_set = {name: f"old {name}" for name in gpt_folder.FILES}
    new_set = {name: f"new {name}" for name in gpt_folder.FILES}
    counts = {"on": False, "n": 0, "kill_at": None}
    for name in STEPS:
        real = getattr(os, name)

        def step(*args, _real=real, **kwargs):
            if counts["on"]:
                counts["n"] += 1
                if counts["n"] == counts["kill_at"]:
                    os._exit(9)
            return _real(*args, **kwargs)
        monkeypatch.setattr(os, name, step)
    old_set["README.md"] = new_set["README.md"] = "how it was made"   # a file beside the set stays
    dry = tmp_path / "dry" / "gpt"
    gpt_folder.write_set(dry, _writer("old"))
    (dry / "README.md").write_text("how it was made")
    counts.update(on=True, n=0)
    gpt_folder.write_set(dry, _writer("new"))
    counts["on"], total = False, counts["n"]
    assert total >= 10
    outcomes = []
    for kill_at in range(1, total + 1):
        folder = tmp_path / f"kill-{kill_at:02d}" / "gpt"
        gpt_folder.write_set(folder, _writer("old"))
        (folder / "README.md").write_text("how it was made")
        child = os.fork()
        if child == 0:
            counts.update(on=True, n=0, kill_at=kill_at)
            gpt_folder.write_set(folder, _writer("new"))
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 9, kill_at
        again = tmp_path / f"again-{kill_at:02d}"          # the next pretrain-gpt into the same folder works
        shutil.copytree(folder.parent, again)
        gpt_folder.write_set(again / "gpt", _writer("third"))
        assert {p.name: p.read_text() for p in (again / "gpt").iterdir()} == {
            **{name: f"third {name}" for name in gpt_folder.FILES}, "README.md": "how it was made"}, kill_at
        assert sorted(p.name for p in again.iterdir()) == [".gpt.lock", "gpt"], kill_at
        with gpt_folder.files.FolderLock(folder.parent, name=f".{folder.name}.lock"):
            gpt_folder.repair(folder)
        found = {p.name: p.read_text() for p in folder.iterdir()}
        assert found in (old_set, new_set), (kill_at, found)
        assert sorted(p.name for p in folder.parent.iterdir()) == [".gpt.lock", "gpt"], kill_at
        outcomes.append("new" if found == new_set else "old")
    assert outcomes == sorted(outcomes, key=["old", "new"].index) and outcomes[0] == "old" and outcomes[-1] == "new"
    print(f"write_set killed at each of {total} steps: the old set after {outcomes.count('old')}, the new after "
          f"{outcomes.count('new')}")
