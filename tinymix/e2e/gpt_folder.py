"""A tiny GPT checkpoint folder (what `pretrain-gpt` writes): replaced as one set, checked before use.

    write_set(folder, save)     # save(staging_folder) writes the files; the set then replaces `folder`
    check(folder)               # a clear ValueError unless it is a complete, well-formed checkpoint

The new set is written beside the folder, in `.NAME.incoming/`, each file flushed to disk (other files
of the folder, such as a README.md, are copied along). Then two
renames swap it in: FOLDER -> `.NAME.previous`, `.NAME.incoming` -> FOLDER; then the previous set is
removed. A reader finds the old set or the new one, never a mix. A kill between the two renames leaves
no FOLDER for a moment; the next write_set finishes the swap (the incoming set was complete). A lock
file `.NAME.lock` beside the folder keeps two writers apart.
"""
import dataclasses
import os
import shutil
from pathlib import Path

from ..store import checkpoint, files
from ..pretrained import TINY_GPT_DIR
from ..transformer import TransformerConfig

FILES = ("model.safetensors", "config.json", "tokenizer.json")
DEFAULT_OUT, DEFAULT_FAST_OUT = "runs/tiny_gpt", "runs/tiny_gpt_fast"


def choose_out(out, fast, overwrite):
    """Where pretrain-gpt writes: `out`, or a default under runs/ (the shipped data/tiny_gpt/ is replaced
    only when named, with --overwrite, and never by a --fast smoke run). Checked before any work."""
    out = Path(out or (DEFAULT_FAST_OUT if fast else DEFAULT_OUT))
    shipped = out.resolve() == TINY_GPT_DIR.resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if shipped and fast:
        raise ValueError(f"a --fast smoke run never replaces the shipped checkpoint in {out}: choose another --out")
    if is_checkpoint(out) and not overwrite:
        raise ValueError(f"{out} holds a tiny GPT checkpoint already" + (" (the one tinymix ships)" if shipped else "")
                         + ": add --overwrite to replace it, or choose another --out")
    return out


def _beside(folder, suffix):
    return folder.parent / f".{folder.name}.{suffix}"


def is_checkpoint(folder):
    return (Path(folder) / "model.safetensors").is_file()


def write_set(folder, save):
    """Write a checkpoint into `folder` as one set: save(staging) writes FILES into a staging folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with files.FolderLock(folder.parent, f"pretraining into {folder}", name=f".{folder.name}.lock"):
        repair(folder)
        incoming, previous = _beside(folder, "incoming"), _beside(folder, "previous")
        incoming.mkdir()
        save(incoming)
        missing = [name for name in FILES if not (incoming / name).is_file()]
        if missing:
            raise RuntimeError(f"the checkpoint writer left out {missing}")
        for other in (folder.iterdir() if folder.is_dir() else []):   # e.g. the shipped README.md stays
            if other.is_file() and other.name not in FILES:
                shutil.copy2(other, incoming / other.name)
        for name in FILES:                       # on disk before the swap
            with open(incoming / name, "rb") as file:
                os.fsync(file.fileno())
        files.sync_folder(incoming)
        if folder.exists():
            folder.rename(previous)
        incoming.rename(folder)
        files.sync_folder(folder.parent)
        if previous.exists():
            files.remove_tree(previous)


def repair(folder):
    """Finish or undo what an interrupted write_set left beside `folder` (its lock held)."""
    folder = Path(folder)
    incoming, previous = _beside(folder, "incoming"), _beside(folder, "previous")
    if previous.exists() and not folder.exists():
        if all((incoming / name).is_file() for name in FILES):
            incoming.rename(folder)              # killed between the two renames: finish the swap
            print(f"finished replacing {folder}, which an interrupted pretrain-gpt had left half done")
        else:
            previous.rename(folder)
    for leftover in (incoming, previous):        # an unfinished new set, or an old one already replaced
        if leftover.exists():
            files.remove_tree(leftover)


def check(folder):
    """A ValueError naming what is wrong unless `folder` holds FILES and a decoder's config.json."""
    folder = Path(folder)
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder} is not a tiny GPT checkpoint: it has no {', '.join(missing)} (pretrain-gpt "
                         f"--out {folder} writes one)")
    where = folder / "config.json"
    config = checkpoint.load_json(where)
    kinds = {f.name: (int, float) if f.type in (float, "float") else type(f.default)
             for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(config) - set(kinds) - {"training"}) if isinstance(config, dict) else []
    if unknown:
        raise ValueError(f"{where} is damaged: unknown fields {unknown}")
    checkpoint.require_fields(config, where, kinds)
    if config["kind"] != "decoder":
        raise ValueError(f"{where} describes an {config['kind']!r}, not a decoder (GPT)")
    return config
