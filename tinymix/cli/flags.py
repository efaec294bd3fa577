"""Flags from dataclass fields: one --flag per field of a config (TrainConfig, NLGConfig), and the
config back from the parsed flags."""
import argparse
import dataclasses


def add_config_flags(parser, config_class, defaults=None, skip=()):
    """One --flag per dataclass field (TrainConfig, NLGConfig; except `skip`), typed like its default."""
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        default = (defaults or {}).get(field.name, field.default)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default: {default})")
        else:
            parser.add_argument(flag, type=type(field.default), default=None, help=f"(default: {default})")


def config_from_args(args, base):
    """`base` with every flag the user gave written over it. With --resume, the base is the settings
    saved in the run folder, so `train --out runs/x --resume --lr 1e-4` needs no other flag."""
    from ..runfolder import RunFolder
    known = {f.name for f in dataclasses.fields(base)}
    given = {name: getattr(args, name) for name in known if getattr(args, name, None) is not None}
    out = given.get("out", base.out)
    saved = RunFolder(out).saved_config() if given.get("resume") and out else None
    if saved is not None:
        base = dataclasses.replace(base, **{k: v for k, v in saved.items() if k in known})
    return dataclasses.replace(base, **given)
