"""Weights on disk: safetensors for arrays, JSON for everything else. Never pickle.

Writes are atomic (a temporary file in the same folder, then a rename), so a crash mid-write leaves
the previous file intact. Loading a damaged file is a clear error naming the file.
"""
import json
import os
import tempfile
from pathlib import Path

import safetensors.numpy

from . import backend


def _atomic_write(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
