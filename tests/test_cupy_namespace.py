"""Every array function tinymix and the lessons call exists in CuPy and accepts the arguments used.

The calls come from two places: the source (every `xp.NAME(...)`, `cupy.NAME(...)` and
`cupyx.NAME(...)` in tinymix/ and lessons/, with its number of positional arguments and its keyword
names), and the CuPy stand-in, which records every function and ndarray-method call while tinymix's
real work runs on it (training steps, merged inference, evaluation, beam search and greedy decoding,
gradient checks, checkpoints, the benchmark).

Without CuPy installed, the first test still checks that the stand-in offers every name the source
uses (the stand-in's names are CuPy's, see cupy_names.py). With CuPy installed, which needs no GPU:

    python3 -m pip install cupy-cuda12x==14.2.0        # 137 MB; CI does not install it

the others look each name up in the real `cupy` module and bind each call to its signature.
"""
import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import cupy_standin
import cupy_workloads as work
from cupy_contract import LEDGER
from tinymix import adamix, backend, bench, functional as F
from tinymix.store import checkpoint
from tinymix.gradient_check import gradcheck
from tinymix.optim import AdamW
from tinymix.tensor import Tensor

ROOT = Path(__file__).resolve().parent.parent
ARRAY_MODULES = ("xp", "cupy", "cupyx")


def dotted(node):
    """'xp.linalg.svd' for the expression xp.linalg.svd; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id in ARRAY_MODULES and parts and "__dict__" not in parts:
        return ".".join([node.id] + parts[::-1])
    return None


def source_calls():
    """{(file, line): (dotted name, positional count or None, keyword names or None)} for every call
    of an array-module function in tinymix/ and lessons/; None where *args or **kwargs hide them."""
    calls, names = {}, set()
    for path in sorted((ROOT / "tinymix").rglob("*.py")) + sorted((ROOT / "lessons").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            name = dotted(node) if isinstance(node, ast.Attribute) else None
            if name:
                names.add(name)
            if isinstance(node, ast.Call) and (name := dotted(node.func)):
                starred = any(isinstance(a, ast.Starred) for a in node.args)
                keywords = [k.arg for k in node.keywords]
                calls[(path.relative_to(ROOT), node.lineno)] = (
                    name, None if starred else len(node.args), None if None in keywords else tuple(keywords))
    return calls, names


def standin_object(name):
    """The stand-in's object for a dotted name ('xp.linalg.svd', 'cupyx.scatter_add'), or None."""
    head, *rest = name.split(".")
    obj = cupy_standin.cupyx if head == "cupyx" else cupy_standin.cupy
    for part in rest:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def test_the_stand_in_offers_every_array_name_the_source_uses():
    _, names = source_calls()
    assert "xp.zeros" in names and "xp.linalg.svd" in names                    # the scan sees them
    missing = sorted(name for name in names if standin_object(name) is None)
    assert not missing, (f"{missing}: not offered by the CuPy stand-in. If CuPy has them, add them to "
                         "tests/cupy_names.py; if not, the code cannot run on a GPU")


# ---- against the real CuPy ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real():
    """The real cupy and cupyx modules (importing them needs no GPU)."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install cupy-cuda12x==14.2.0)")
    if cupy is cupy_standin.cupy:
        pytest.skip("`import cupy` gives the CuPy stand-in here (the whole suite runs on it)")
    import cupyx
    return cupy, cupyx


def real_object(real, name):
    """The real object for a recorded name ('astype' on ndarray is 'ndarray.astype')."""
    cupy, cupyx = real
    head, *rest = name.split(".")
    obj = cupyx if head == "cupyx" else cupy
    for part in ([] if head in ARRAY_MODULES else [head]) + rest:
        obj = getattr(obj, part)
    return obj


def signature(obj, name):
    """The signature of a real CuPy callable: from inspect, or from the first line of its docstring
    (Cython functions and ufuncs carry it there), without `self` for methods."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        line = (obj.__doc__ or "").strip().splitlines()[0] if obj.__doc__ else ""
        found = re.match(r"^[\w.]*\((.*)\)(\s*->.*)?$", line)
        if not found:
            return None
        params = found.group(1).replace("\\*", "*")
        params = re.sub(r"=[^,*]+", "=None", params)        # defaults may not be Python expressions
        params = re.sub(r"[\w.]+\s+(\w+)(?=\s*(=|,|$))", r"\1", params)   # Cython's `int device_id`
        namespace = {}
        try:
            exec(f"def f({params}): pass", namespace)
        except SyntaxError:
            return None
        sig = inspect.signature(namespace["f"])
    parameters = list(sig.parameters.values())
    if parameters and parameters[0].name == "self":
        sig = sig.replace(parameters=parameters[1:])
    return sig


def binds(real, name, positional, keywords):
    """None if the call binds to the real signature; else why not."""
    try:
        obj = real_object(real, name)
    except AttributeError:
        return "CuPy has no such name"
    if positional is None or keywords is None:
        return None
    sig = signature(obj, name)
    if sig is None:
        return "no signature to check against"
    try:
        sig.bind(*[None] * positional, **dict.fromkeys(keywords))
    except TypeError as error:
        return f"does not bind: {error} (CuPy's signature: {sig})"
    return None


def test_the_stand_in_offers_nothing_cupy_lacks(real):
    cupy, cupyx = real
    missing = [f"cupy.{name}" for name in vars(cupy_standin.cupy)
               if not name.startswith("__") and not hasattr(cupy, name)]
    for space in ("linalg", "random", "cuda"):
        missing += [f"cupy.{space}.{name}" for name in vars(getattr(cupy_standin.cupy, space))
                    if not name.startswith("__") and not hasattr(getattr(cupy, space), name)]
    missing += [f"cupy._core.syncdetect.{name}" for name in ("allow_synchronize", "DeviceSynchronized")
                if not hasattr(cupy._core.syncdetect, name)]
    for ours, theirs in ((cupy_standin.cupy.ndarray, cupy.ndarray), (cupy_standin.Generator, cupy.random.Generator),
                         (type(cupy_standin.cupy.get_default_memory_pool()), cupy.cuda.MemoryPool),
                         (cupy_standin.Device, cupy.cuda.Device), (cupy_standin.Stream, cupy.cuda.Stream)):
        missing += [f"{theirs.__name__}.{name}" for name in dir(ours)
                    if not name.startswith("_") and not hasattr(theirs, name)]
    missing += [f"cupyx.{name}" for name in vars(cupy_standin.cupyx) if not name.startswith("__")
                and not hasattr(cupyx, name)]
    assert not missing, missing


def test_every_call_in_the_source_binds_to_cupy(real):
    calls, _ = source_calls()
    wrong = {f"{path}:{line} {name}": why for (path, line), (name, positional, keywords) in calls.items()
             if (why := binds(real, name, positional, keywords))}
    assert len(calls) > 100 and not wrong, wrong


def recorded_calls(folder):
    """Every call the stand-in saw while tinymix's work ran on it (the cupy backend on the stand-in)."""
    work.train_marking_steps(work.train_config(epochs=1, log_every=2), work.tiny_splits(16, 8))
    model = work.tiny_classifier()
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    work.bare_training_step(model, optimizer, work.host_batch(), low_memory=True)
    state = optimizer.state_dict()
    optimizer.load_state_dict({**state, "arrays": {k: backend.to_numpy(v) for k, v in state["arrays"].items()}})
    checkpoint.save_arrays(folder / "optimizer.safetensors", state["arrays"])
    work.inference_and_decoding()
    x = Tensor(backend.host_normal((3, 4), 1.0), requires_grad=True, dtype=np.float64)
    gradcheck(lambda t: F.gelu(t).sum(), x)
    adamix.consistency_loss(Tensor(backend.host_normal((2, 3), 1.0)), Tensor(backend.host_normal((2, 3), 1.0)))
    bench.run(quick=True, rounds=1, use_torch=False, log=lambda message: None)
    return dict(LEDGER.calls)


def test_every_call_tinymix_made_on_the_stand_in_binds_to_cupy(real, emulated_cupy, tmp_path):
    calls = recorded_calls(tmp_path)
    assert len(calls) > 30 and ("ndarray.astype", 1, ()) in calls
    wrong = {f"{name}({positional} positional, keywords {keywords})": why
             for (name, positional, keywords) in calls
             if (why := binds(real, name, positional, keywords))}
    assert not wrong, wrong
