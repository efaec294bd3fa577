"""Checking settings before any work starts: each error names the flag, the value and what is valid.

    check_range("batch_size", 0, low=1, integer=True)
    # ValueError: --batch-size must be an integer >= 1, got 0
    check_range("warmup", 1.5, 0.0, 1.0)
    # ValueError: --warmup must be a number in [0, 1], got 1.5
    check_choice("sharing", "left", ("up", "down", "none", "both"))

Settings are named as their command-line flags (a field `batch_size` is the flag `--batch-size`), since
that is where most values come from; the same checks run for configs made in Python.
"""
import math


def flag(name):
    """The command-line flag of a config field: "batch_size" -> "--batch-size"."""
    return "--" + name.replace("_", "-")


def _range_text(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def check_range(name, value, low=None, high=None, *, integer=False, low_open=False, high_open=False, why=""):
    """Raise a ValueError unless `value` is a finite number (an int if `integer`; bool is neither) in
    the range from `low` to `high` (None: unbounded; `low_open`/`high_open`: that bound excluded).
    `why`, if given, is added to the message (e.g. what the bound comes from). Returns value."""
    kind = "an integer" if integer else "a number"
    valid = kind + " " + _range_text(low, high, low_open, high_open)
    is_number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not is_number:
        raise ValueError(f"{flag(name)} must be {valid}, got {value!r} ({type(value).__name__})")
    if (not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
            or (high is not None and (value >= high if high_open else value > high))):
        raise ValueError(f"{flag(name)} must be {valid}, got {value!r}" + (f" ({why})" if why else ""))
    return value


def check_choice(name, value, choices):
    """Raise a ValueError unless `value` is one of `choices`. Returns value."""
    if value not in choices:
        raise ValueError(f"{flag(name)} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{flag(name)} must be true or false, got {value!r}")
    return value


def check_text(name, value):
    if not isinstance(value, str):
        raise ValueError(f"{flag(name)} must be text, got {value!r} ({type(value).__name__})")
    return value


def extreme_settings(config, defaults, names, factor=10.0):
    """The settings among `names` whose value is `factor` or more times its default ({name: default}),
    or not finite: the usual suspects when a loss turns NaN. A list of "--flag value (default d)"."""
    found = []
    for name in names:
        value, default = getattr(config, name), defaults[name]
        if not math.isfinite(value) or (default > 0 and value >= factor * default):
            found.append(f"{flag(name)} {value:g} (default {default:g})")
    return found
