"""Weights on disk: safetensors for arrays, JSON for everything else. Never pickle.

Writes are atomic and durable (files.atomic_write: a temporary file in the same folder, flushed, then
a rename), so a crash mid-write leaves the previous file intact; files get 0o666 minus the umask.
Loading a damaged file is a clear error naming the file.
"""
import json
from pathlib import Path

import safetensors.numpy

from .. import backend
from .files import atomic_write as _atomic_write


def save_arrays(path, arrays, metadata=None):
    """Write {name: xp or NumPy array} as a safetensors file (CuPy arrays are copied to the host,
    every array made contiguous first). `metadata` is a dict of strings stored in the header."""
    host = {name: backend.to_numpy_contiguous(array) for name, array in arrays.items()}
    _atomic_write(path, safetensors.numpy.save(host, metadata=metadata))


def load_arrays(path):
    """{name: NumPy array} from a safetensors file, or a clear error if it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    data = path.read_bytes()
    return load_array_bytes(data, str(path))


def load_array_bytes(data, where="<bytes>"):
    try:
        return safetensors.numpy.load(data)
    except Exception as error:  # safetensors raises its own error types for bad headers and sizes
        raise ValueError(f"{where} is not a valid safetensors file (corrupted or truncated?): {error}. "
                         "Delete it and fetch or save it again.") from error


def save_json(path, obj):
    _atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_json(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no JSON file at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def require_fields(obj, where, fields):
    """Check a loaded JSON object against {key: type or tuple of types}; a ValueError naming the file
    and the first key that is missing or of the wrong kind. Returns obj."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is damaged: expected a JSON object, found {type(obj).__name__}")
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    for key, kinds in fields.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        value = obj.get(key)
        wrong_bool = isinstance(value, bool) and bool not in kinds      # JSON true is not a number
        if key not in obj or not isinstance(value, kinds) or wrong_bool:
            expected = " or ".join(names.get(kind, kind.__name__) for kind in kinds)
            found = "missing" if key not in obj else f"{value!r}"[:40]
            raise ValueError(f"{where} is damaged: {key!r} must be {expected}, found {found}")
    return obj
