"""A run folder (`train --out FOLDER`): one writer at a time, and checkpoints that survive a kill at any
instant.

    FOLDER/
      .lock                      locked while a run writes here; a second run is refused
      config.json                the settings of the latest session
      config_history.json        every session: the first one's settings, then what each --resume changed
      checkpoints/epoch-0002/    adapter weights, optimizer state, progress (AdaLoRA: its scores too), manifest.json
      best/  merged/  results.json   (training_curve.png and losses.json come from the commands)

A checkpoint is written file by file into its own folder; its manifest.json (every file's size and
sha256) is written last, after the others are on disk. A folder with a valid manifest is a complete
checkpoint; the newest complete one is what --resume continues from. A kill at any moment leaves the
previous checkpoint complete and at worst an unfinished folder, which the next run removes (it has no
manifest, so it was never complete). Older checkpoints are removed once a newer one is complete, except
the one holding the best epoch so far (its weights are the best weights).

A fresh run into a folder that holds a run is refused: --resume continues it, --overwrite replaces it
(removing only the files a run writes, listed in RUN_FILES and RUN_FOLDERS).
"""
import re
from dataclasses import asdict
from pathlib import Path

from .store import checkpoint, files
from . import peft

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
METHOD_STATE = "method_state.safetensors"     # a method's own state between steps (AdaLoRA's scores)
RUN_FILES = ("config.json", "config_history.json", "results.json", "losses.json", "training_curve.png")
RUN_FOLDERS = (CHECKPOINTS, "best", "merged", "last", "last.new", "last.old")   # last*: tinymix's old layout
_CHECKPOINT_NAME = re.compile(r"^epoch-(\d{4,})$")
# settings a resumed run may change; any other difference means another experiment
RESUMABLE = {"epochs", "resume", "overwrite", "progress", "out", "eval_batch_size", "low_memory", "log_every", "lr",
             "test"}


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)
        self.lock = files.FolderLock(self.path, "a training run")

    # ---- opening: lock, then decide; nothing is written yet -----------------------------------------

    def open(self, cfg):
        """Lock the folder and check that `cfg` may run in it; raises before anything is written."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out {self.path} is a file, not a folder: choose another --out")
        self.lock.acquire()
        try:
            if self.holds_run() and not (cfg.resume or cfg.overwrite):
                raise ValueError(f"{self.path} holds a run already: add --resume to continue it, --overwrite to "
                                 "replace it, or choose another --out")
            if cfg.resume and self.holds_run():
                self._check_resumable(cfg)
        except BaseException:
            self.close()
            raise
        return self

    def close(self):
        self.lock.release()

    def holds_run(self):
        return any((self.path / name).exists() for name in RUN_FILES + RUN_FOLDERS)

    def _check_resumable(self, cfg):
        saved = self.saved_config()
        if saved is None:
            return
        differing = {k: (v, getattr(cfg, k, None)) for k, v in saved.items()
                     if k not in RESUMABLE and getattr(cfg, k, None) != v}
        if differing:
            may = ", ".join("--" + k.replace("_", "-") for k in sorted(RESUMABLE - {"resume", "overwrite", "out"}))
            raise ValueError(f"the run in {self.path} has other settings; differing (saved, now): {differing}. "
                             f"Use the same settings (only {may} may change on --resume), or --overwrite, or "
                             "another --out.")

    def saved_config(self):
        """The settings in config.json (a dict), or None if there is none."""
        path = self.path / "config.json"
        return checkpoint.require_fields(checkpoint.load_json(path), path, {}) if path.is_file() else None

    # ---- beginning: replace or repair, record the settings ------------------------------------------

    def begin(self, cfg):
        """Make the folder ready for `cfg` (called once the data and model are ready): clear it on
        --overwrite, repair what a crash left. Returns the checkpoint folder to continue from (the
        newest complete one, on --resume) or None. The settings are recorded by `record`, once the
        checkpoint has loaded."""
        if cfg.overwrite:
            self._clear()
        if cfg.resume:
            self._adopt_old_layout()
        self.repair()
        found = self.newest() if cfg.resume else None
        if found is not None and _epoch(found) > cfg.epochs:
            raise ValueError(f"{found} is after epoch {_epoch(found)}, but --epochs is {cfg.epochs}: give "
                             f"--epochs {_epoch(found)} or more")
        if cfg.resume and found is None:
            print(f"nothing to resume in {self.path}: starting from the first epoch")
        return found

    def record(self, cfg, found):
        """Write config.json and add this session to config_history.json (what changed on --resume)."""
        history = self._history() if cfg.resume else []
        saved = self.saved_config() if cfg.resume else None
        settings = asdict(cfg)
        if saved is None or not history:
            history = [{"session": 1, "started": "fresh", "config": settings}]
        else:
            changed = {k: [saved.get(k), v] for k, v in settings.items()
                       if k not in ("resume", "overwrite", "progress") and saved.get(k) != v}
            history.append({"session": len(history) + 1,
                            "started": f"resume after epoch {_epoch(found) if found else 0}", "changed": changed})
            if changed:
                print("resuming with changed settings: " + ", ".join(
                    f"--{k.replace('_', '-')} {now} (was {before})" for k, (before, now) in changed.items())
                    + f"; recorded in {self.path / 'config_history.json'}")
        checkpoint.save_json(self.path / "config.json", settings)
        checkpoint.save_json(self.path / "config_history.json", history)
        self.history = history

    def _history(self):
        path = self.path / "config_history.json"
        found = checkpoint.load_json(path) if path.is_file() else []
        return found if isinstance(found, list) else []

    def _clear(self):
        """--overwrite: remove what a run writes, nothing else."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            if (self.path / name).is_dir():
                files.remove_tree(self.path / name)
        print(f"--overwrite: removed the previous run's files from {self.path}")

    def _adopt_old_layout(self):
        """An earlier tinymix kept one checkpoint in last/ (and last.new/, last.old/ while it swapped them).
        The newest complete one becomes checkpoints/epoch-N/ (its manifest written before the move), the
        others are removed once it is in place."""
        old = [self.path / name for name in ("last.new", "last", "last.old") if (self.path / name).is_dir()]
        for folder in old:                            # newest first
            names = ("adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors", "state.json")
            if not all((folder / name).is_file() for name in names):
                continue                              # state.json came last: without it, unfinished
            state = checkpoint.require_fields(checkpoint.load_json(folder / "state.json"), folder / "state.json",
                                              {"epoch": int, "step": int})
            target = self.checkpoint_folder(state["epoch"])
            if not target.exists():
                _write_manifest(folder, state["epoch"], state["step"])
                target.parent.mkdir(parents=True, exist_ok=True)
                folder.rename(target)
                files.sync_folder(target.parent)
                print(f"moved {folder} to {target}: the checkpoint layout of this tinymix")
            break
        for folder in old:
            if folder.exists():
                files.remove_tree(folder)

    def repair(self):
        """Remove what an interrupted save left: temporary files, and checkpoint folders without a
        manifest (never complete). A folder whose manifest does not match its files is reported and
        left alone."""
        for folder in [self.path, self.path / "best", self.path / "merged", *self._checkpoint_folders()]:
            for path in (folder.iterdir() if folder.is_dir() else []):
                if files.is_temporary(path):
                    files.remove_tree(path) if path.is_dir() else path.unlink()
        for folder in self._checkpoint_folders():
            if not (folder / MANIFEST).is_file():
                files.remove_tree(folder)
                print(f"removed {folder}: an unfinished checkpoint left by an interrupted save")
        self.prune(quick=False)

    # ---- checkpoints ---------------------------------------------------------------------------------

    def checkpoint_folder(self, epoch):
        return self.path / CHECKPOINTS / f"epoch-{epoch:04d}"

    def _checkpoint_folders(self):
        folder = self.path / CHECKPOINTS
        found = [p for p in folder.iterdir() if p.is_dir() and _CHECKPOINT_NAME.match(p.name)] if folder.is_dir() else []
        return sorted(found, key=_epoch)

    def complete(self, quick=False):
        """Complete checkpoint folders, oldest first. quick: check sizes only, not sha256."""
        return [folder for folder in self._checkpoint_folders() if _problem(folder, quick) is None]

    def newest(self):
        """The newest complete checkpoint (sizes and sha256 checked), or None; a damaged one is reported."""
        for folder in reversed(self._checkpoint_folders()):
            problem = _problem(folder)
            if problem is None:
                return folder
            if (folder / MANIFEST).is_file():
                print(f"skipping {folder}: {problem}")
        return None

    def save_checkpoint(self, model, optimizer, state, method_state=None):
        """Write the checkpoint of epoch state["epoch"]; complete once its manifest is written.
        method_state: a method's own arrays between steps (AdaLoRA's scores), if it has any."""
        folder = self.checkpoint_folder(state["epoch"])
        if folder.exists():           # an unfinished or damaged one: a complete one would have been resumed
            files.remove_tree(folder)
        folder.mkdir(parents=True)
        peft.save_adapter(model, folder)
        saved = optimizer.state_dict()
        checkpoint.save_arrays(folder / "optimizer.safetensors", saved.pop("arrays"))
        if method_state:
            checkpoint.save_arrays(folder / METHOD_STATE, method_state)
        checkpoint.save_json(folder / "state.json", {**state, "optimizer": saved})
        _write_manifest(folder, state["epoch"], state["step"])
        files.sync_folder(folder.parent)          # the new folder's name is on disk before older ones go
        self.prune()

    def prune(self, quick=True):
        """Keep the newest complete checkpoint and the one holding its best epoch; remove older complete
        ones. quick: trust the sizes (right after a save); otherwise check every sha256 first."""
        complete = self.complete(quick)
        if not complete:
            return
        newest = complete[-1]
        state = checkpoint.load_json(newest / "state.json")
        best_epoch = state.get("best_epoch") if isinstance(state, dict) else None
        for folder in complete[:-1]:
            if _epoch(folder) != best_epoch:
                (folder / MANIFEST).unlink()        # first: a half-removed folder is never taken as complete
                files.remove_tree(folder)

    def load_checkpoint(self, folder, model, optimizer):
        state = checkpoint.require_fields(checkpoint.load_json(folder / "state.json"), folder / "state.json", {
            "epoch": int, "step": int, "best_validation": (int, float), "best_epoch": int, "history": list,
            "losses": list, "optimizer": dict})
        peft.load_adapter(model, folder)
        saved = state.pop("optimizer")
        saved["arrays"] = checkpoint.load_arrays(folder / "optimizer.safetensors")
        optimizer.load_state_dict(saved)
        print(f"resuming from {folder} after epoch {state['epoch']} (step {state['step']})")
        return state


    @staticmethod
    def method_state(folder):
        """The method's arrays saved with a checkpoint (save_checkpoint's method_state), or None."""
        path = Path(folder) / METHOD_STATE
        return checkpoint.load_arrays(path) if path.is_file() else None


def _epoch(folder):
    return int(_CHECKPOINT_NAME.match(Path(folder).name).group(1))


def _write_manifest(folder, epoch, step):
    """The manifest that makes `folder` a complete checkpoint: every file's size and sha256."""
    listing = {p.name: {"bytes": p.stat().st_size, "sha256": files.sha256(p)}
               for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST and not files.is_temporary(p)}
    checkpoint.save_json(folder / MANIFEST, {"epoch": epoch, "step": step, "files": listing})


def _problem(folder, quick=False):
    """None if `folder` is a complete checkpoint, else what is wrong with it."""
    try:
        manifest = checkpoint.require_fields(checkpoint.load_json(folder / MANIFEST), folder / MANIFEST,
                                             {"epoch": int, "files": dict})
    except (OSError, ValueError) as error:
        return f"no valid manifest ({error})"
    for name, entry in manifest["files"].items():
        path = folder / name
        if not isinstance(entry, dict) or not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return f"{name} is missing or has another size than its manifest says"
        if not quick and files.sha256(path) != entry.get("sha256"):
            return f"{name} does not match the sha256 in its manifest (damaged or edited)"
    if manifest["epoch"] != _epoch(folder) or "state.json" not in manifest["files"]:
        return "its manifest belongs to another checkpoint"
    return None


def resume_hint(out, command="train"):
    """What a user can do after a run in `out` stopped: where its last complete checkpoint is, and the
    command that continues it. For the messages of an interrupted or failed run."""
    if not out:
        return "nothing was saved (no --out folder)"
    run = RunFolder(out)
    if not run.holds_run():
        return f"nothing was saved in {out} yet"
    complete = run.complete(quick=True)
    where = (f"the last complete checkpoint is {complete[-1]} (after epoch {_epoch(complete[-1])})" if complete
             else "no checkpoint was saved yet (the first is written after epoch 1)")
    return f"{where}; continue with: python3 -m tinymix {command} --out {out} --resume"
