"""The backend: one file knows about NumPy and CuPy, seeds reproduce host draws on every backend,
scatter-add counts repeated indices."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinymix
from tinymix import backend

PACKAGE = Path(tinymix.__file__).parent
ARRAY_MODULES = {"numpy", "cupy", "cupyx"}


def imported_array_modules(source):
    """The array modules (numpy, cupy, cupyx) that Python source imports, in any form."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("__import__", "import_module")):
            names = [str(node.args[0].value)]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & ARRAY_MODULES
    return found


def test_the_import_guard_sees_every_form_of_import():
    for source in ("import numpy", "import numpy as np", "from numpy import float32", "import cupy.cuda",
                   "from cupyx import scatter_add", "import os, numpy", "def f():\n    import cupy\n",
                   "import importlib\nimportlib.import_module('numpy')", "np = __import__('numpy')"):
        assert imported_array_modules(source), source
    for source in ("from .backend import xp", "from . import backend", "import numbers",
                   "import safetensors.numpy", "numpy = None"):
        assert not imported_array_modules(source), source


def test_only_the_backend_imports_numpy_or_cupy():
    files = sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "lessons").rglob("*.py"))
    assert PACKAGE / "tensor.py" in files  # the scan looks where the engine is ...
    assert PACKAGE.parent / "lessons" / "10_mixtures_and_routing.py" in files   # ... and where students read
    offenders = {str(path.relative_to(PACKAGE.parent)): sorted(imported_array_modules(path.read_text()))
                 for path in files if path != PACKAGE / "backend.py"}
    offenders = {path: modules for path, modules in offenders.items() if modules}
    assert not offenders, (f"only tinymix/backend.py may import numpy or cupy; say `xp` instead "
                           f"(`backend.host` for values on the CPU): {offenders}")
    assert imported_array_modules((PACKAGE / "backend.py").read_text()) >= {"numpy"}


# ---- choosing the backend --------------------------------------------------------------------------

def test_set_backend_switches_xp_in_place(backend_name):
    xp = backend.xp
    assert backend.name == backend_name
    assert backend.is_array(xp.zeros(3))
    expected = np if backend_name == "numpy" else pytest.importorskip("cupy")
    assert xp.ndarray is expected.ndarray
    assert tinymix.tensor.xp is xp  # modules that imported xp earlier see the switch


def test_unknown_backend_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"unknown backend 'torch': choose one of \('numpy', 'cupy'\)"):
        backend.set_backend("torch")


def test_missing_cupy_says_how_to_get_it():
    try:
        import cupy  # noqa: F401
    except ImportError:
        before = backend.name, backend.xp.ndarray
        with pytest.raises(RuntimeError, match="needs CuPy, which is not installed.*requirements-gpu.txt"):
            backend.set_backend("cupy")
        assert (backend.name, backend.xp.ndarray) == before  # the failed switch changed nothing
    else:
        pytest.skip("CuPy is installed: nothing to check about its absence")


def test_arrays_move_between_host_and_device(backend_name):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    device = backend.from_numpy(host)
    assert backend.is_array(device)
    back = backend.to_numpy(device)
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
    np.testing.assert_array_equal(back, host)
    if backend_name == "cupy":
        assert not backend.is_array(host)  # a host array is not a device array


# ---- random numbers ----------------------------------------------------------------------------------

def host_draws():
    return (backend.to_numpy(backend.host_normal((3, 4), 0.02)),
            backend.to_numpy(backend.host_uniform((5,), -1.0, 1.0)),
            [backend.host_choice(4) for _ in range(20)])


def test_manual_seed_repeats_host_draws(backend_name):
    tinymix.manual_seed(123)
    first = host_draws()
    tinymix.manual_seed(123)
    again = host_draws()
    tinymix.manual_seed(124)
    other = host_draws()
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    normal, uniform, choices = first
    assert normal.dtype == np.float32 and normal.shape == (3, 4)
    assert 0.005 < normal.std() < 0.05  # std 0.02 was asked for
    assert uniform.dtype == np.float32 and ((-1.0 <= uniform) & (uniform < 1.0)).all()
    assert set(choices) <= {0, 1, 2, 3} and len(set(choices)) > 1


def test_host_draws_are_the_same_on_every_backend(backend_name):
    backend.set_backend("numpy")
    tinymix.manual_seed(5)
    on_numpy = host_draws()
    backend.set_backend(backend_name)
    tinymix.manual_seed(5)
    for a, b in zip(on_numpy, host_draws()):
        np.testing.assert_array_equal(a, b)


def test_manual_seed_repeats_device_draws(backend_name):
    tinymix.manual_seed(9)
    first = backend.to_numpy(backend.device_uniform((4, 4), backend.xp.float32))
    tinymix.manual_seed(9)
    again = backend.to_numpy(backend.device_uniform((4, 4), backend.xp.float32))
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and ((0.0 <= first) & (first < 1.0)).all()


def test_host_generator_leaves_the_global_seed_alone():
    tinymix.manual_seed(11)
    expected = backend.host_choice(1000), backend.host_choice(1000)
    tinymix.manual_seed(11)
    split = backend.host_generator(3).permutation(10)
    assert (backend.host_choice(1000), backend.host_choice(1000)) == expected
    np.testing.assert_array_equal(split, backend.host_generator(3).permutation(10))


# ---- scatter-add -----------------------------------------------------------------------------------

def test_scatter_add_counts_repeated_indices(backend_name):
    target = backend.from_numpy(np.zeros(5, np.float32))
    index = np.array([0, 3, 3, 1, 3])
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0], np.float32)
    backend.scatter_add(target, backend.from_numpy(index), backend.from_numpy(values))
    expected = np.zeros(5, np.float32)
    for i, v in zip(index, values):  # one update per occurrence
        expected[i] += v
    np.testing.assert_array_equal(backend.to_numpy(target), expected)  # [1, 8, 0, 22, 0]


def test_scatter_add_rows_of_a_matrix(backend_name):
    rng = np.random.default_rng(0)
    start = rng.standard_normal((4, 3)).astype(np.float32)
    ids = np.array([[2, 0], [2, 2]])
    rows = rng.standard_normal((2, 2, 3)).astype(np.float32)
    target = backend.from_numpy(start.copy())
    backend.scatter_add(target, backend.from_numpy(ids), backend.from_numpy(rows))
    expected = start.copy()
    for (i, j), row_id in np.ndenumerate(ids):
        expected[row_id] += rows[i, j]
    np.testing.assert_allclose(backend.to_numpy(target), expected, rtol=1e-6)


def test_importing_tinymix_does_nothing_surprising():
    """No allocator tuning at import (backend.reuse_freed_memory is called by the command line)."""
    spy = ("import ctypes, sys\nopened = []\nclass Spy(ctypes.CDLL):\n"
           "    def __init__(self, name, *a, **k):\n        opened.append(str(name))\n        super().__init__(name, *a, **k)\n"
           "ctypes.CDLL = Spy\nimport tinymix, tinymix.train, tinymix.e2e.finetune\n"
           "from tinymix import backend\nassert not any('libc' in n for n in opened), opened\n"
           "backend.reuse_freed_memory()\nprint(opened)\n")
    done = subprocess.run([sys.executable, "-c", spy], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not sys.platform.startswith("linux") or "libc.so.6" in done.stdout     # ... which does tune it


def test_importing_the_package_imports_nothing_heavy():
    """`import tinymix` loads no NumPy (so `python3 -m tinymix.grade` can clean sys.path first), yet
    every name it offers works, and the function gradcheck is not shadowed by its module."""
    import subprocess
    import sys
    code = ("import sys, tinymix; assert 'numpy' not in sys.modules, 'numpy imported';"
            "import tinymix.gradient_check; from tinymix import gradcheck, Tensor, functional;"
            "assert callable(gradcheck) and gradcheck.__name__ == 'gradcheck'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert done.stdout.strip() == "ok", done.stderr
