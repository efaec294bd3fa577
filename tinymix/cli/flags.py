"""Flags from dataclass fields: one --flag per field of a config (TrainConfig, NLGConfig), and the
config back from the parsed flags. `train` and `compare` serve two tasks with two configs: a flag both
configs have appears once, a flag of one task only in that task's group of `--help`, and giving a
flag of the other task is an error that says so."""
import argparse
import dataclasses

E2E = "e2e"          # --task e2e: the data-to-text task on the tiny GPT; any other --task is classification


def _help(name, defaults):
    """The field's line (helptext.py) and "(default: X)", or "(default: X; --task e2e: Y)" when the two
    tasks differ."""
    from .helptext import field_help
    shown = {task: '""' if value == "" else value for task, value in defaults.items()}
    values = list(dict.fromkeys(shown.values()))
    default = (f"(default: {values[0]})" if len(values) == 1 else "(default: " + "; ".join(
        f"{value}" if task != E2E else f"--task e2e: {value}" for task, value in shown.items()) + ")")
    return f"{field_help().get(name, '')} {default}".strip().replace("%", "%%")


def add_config_flags(parser, configs, skip=(), defaults=None):
    """One --flag per field of the dataclasses in `configs` ({task: class}, or one class), typed like its
    default and given default None (so that a flag the user gave is known). `skip`: fields left out;
    `defaults`: {field: value} shown instead of the class's default."""
    configs = configs if isinstance(configs, dict) else {"": configs}
    fields = {}
    for task, config_class in configs.items():
        for field in dataclasses.fields(config_class):
            if field.name not in skip:
                default = (defaults or {}).get(field.name, field.default)
                fields.setdefault(field.name, (field, {}))[1][task] = default
    groups = {}
    for name, (field, by_task) in fields.items():
        if len(configs) > 1:
            key = "both tasks" if len(by_task) == len(configs) else (
                "--task e2e only" if E2E in by_task else "classification only (--task movie-reviews or a folder)")
            group = groups.setdefault(key, parser.add_argument_group(key))
        else:
            group = parser
        flag = "--" + name.replace("_", "-")
        if isinstance(field.default, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=_help(name, by_task))
        else:
            group.add_argument(flag, type=type(field.default), default=None, help=_help(name, by_task))
    parser.set_defaults(config_fields=sorted(fields))
    return parser


def config_from_args(args, base, command=""):
    """`base` with every flag the user gave written over it; a flag that `base` has no field for is an
    error (it belongs to the other task). With --resume, the base is the settings saved in the run
    folder, so `train --out runs/x --resume --lr 1e-4` needs no other flag."""
    from ..runfolder import RunFolder
    known = {f.name for f in dataclasses.fields(base)}
    foreign = [name for name in getattr(args, "config_fields", ())
               if name not in known and name != "task" and getattr(args, name, None) is not None]
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise ValueError(f"{flags}: not a flag of `{command}` (see `python3 -m tinymix "
                         f"{command.split(' --')[0]} --help`, which groups the flags by task)")
    given = {name: getattr(args, name) for name in known if getattr(args, name, None) is not None}
    out = given.get("out", base.out)
    saved = RunFolder(out).saved_config() if given.get("resume") and out else None
    if saved is not None:
        base = dataclasses.replace(base, **{k: v for k, v in saved.items() if k in known})
    return dataclasses.replace(base, **given)
