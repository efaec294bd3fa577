"""The one module that knows about NumPy and CuPy. Everything else says `xp`.

    from tinymix.backend import xp      # the array module in use: numpy or cupy
    xp.exp(x), xp.zeros(shape, dtype=xp.float32), ...
    from tinymix.backend import host    # NumPy itself, for values on the CPU whatever the backend:
    host.percentile(accuracies, 95)     # statistics of results, the data of a figure

The backend is chosen once, before any tensor is made: by `set_backend("numpy" | "cupy")` or by the
environment variable TINYMIX_BACKEND. `xp` stays the same object when the backend switches, so a module
that imported it earlier sees the switch too.

Random numbers come from two generators, both reset by `manual_seed`:
- `host_rng`, a NumPy generator on the CPU, for everything that must be identical on NumPy and CuPy:
  initial weights, data shuffles, AdaMix routing decisions;
- a device generator for the large, throw-away draws of dropout masks (drawing those on the host and
  copying them over would stall a GPU).
"""
import ctypes
import os
import sys
import types

import numpy

BACKENDS = ("numpy", "cupy")


class _ArrayModule(types.ModuleType):
    """A stand-in for the active array module. `set_backend` copies the module's names into this
    object's __dict__, so `xp.exp` is a plain attribute hit; __getattr__ only serves names the module
    loads lazily (e.g. numpy.testing)."""

    def __getattr__(self, name):
        if "_module" not in self.__dict__:       # TINYMIX_BACKEND named no usable backend
            require()
        return getattr(self.__dict__["_module"], name)


xp = _ArrayModule("xp")
host = numpy          # host-side values (results, figures' data), never a model's arrays
name = None           # "numpy" or "cupy": the backend in use
host_rng = None       # numpy.random.Generator: weights, shuffles, routes
_device_rng = None    # xp.random.Generator: dropout masks
_seed = 0             # the last seed given to manual_seed


def set_backend(backend):
    """Switch the array module. Tensors made before the switch keep their old arrays: switch first."""
    global name
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {BACKENDS}")
    if backend == "cupy":
        module = _import_cupy()
    else:
        module = numpy
    xp.__dict__.clear()
    xp.__dict__.update(vars(module))
    xp.__dict__["_module"] = module
    name = backend
    manual_seed(_seed)


def _import_cupy():
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(
            "the cupy backend needs CuPy, which is not installed. Install it with "
            "`pip install -r requirements-gpu.txt`, or use the numpy backend "
            "(unset TINYMIX_BACKEND or set it to 'numpy')."
        ) from error
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CUDA driver missing or broken: CuPy says why
        raise RuntimeError(f"the cupy backend needs an NVIDIA GPU, but CUDA reports: {error}") from error
    if count == 0:
        raise RuntimeError("the cupy backend needs an NVIDIA GPU, and none is visible")
    return cupy


def manual_seed(seed):
    """Seed both generators. The host generator gives the same numbers on every backend.
    `seed` is an int, a sequence of ints (e.g. [seed, epoch]), or None for fresh entropy."""
    global host_rng, _device_rng, _seed
    _seed = seed
    host_rng = numpy.random.default_rng(seed)
    device_seed = int(host_rng.integers(2**31))
    _device_rng = xp.random.default_rng(device_seed)


def describe():
    """Versions and device for reports: NumPy's; CuPy's, CUDA's and the GPU's name where CuPy imports
    and sees a GPU (else what went wrong, as text)."""
    info = {"numpy": numpy.__version__}
    try:
        import cupy
        info.update(cupy=cupy.__version__, cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
                    cuda_driver=cupy.cuda.runtime.driverGetVersion(),
                    gpu=cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
    except Exception as error:                       # no CuPy, no driver, no GPU: said, not raised
        info["cupy_error"] = repr(error)
    return info


def synchronize():
    """Wait until the GPU has finished the work queued so far (CuPy launches kernels and returns at
    once, so a clock read before this measures the launch, not the work). Nothing to wait for on NumPy."""
    if name == "cupy":
        xp.cuda.Device().synchronize()


# ---- moving arrays -------------------------------------------------------------------------------

def to_numpy(array):
    """An xp array (or anything array-like) as a NumPy array on the host."""
    if name == "cupy" and isinstance(array, xp.ndarray):
        return array.get()
    return numpy.asarray(array)


def to_numpy_contiguous(array):
    """A C-contiguous host copy, for writing files (safetensors 0.8 writes a transposed NumPy view
    with the wrong values; a round trip in tests/test_checkpoint.py guards it)."""
    return numpy.asarray(to_numpy(array), order="C")  # (ascontiguousarray would turn 0-d into 1-d)


def from_numpy(array):
    """A host array as an xp array on the active device (no copy on the numpy backend)."""
    return xp.asarray(array)


def is_array(value):
    """True for an array of the active backend."""
    return isinstance(value, xp.ndarray)


def host_arange(n):
    """0..n-1 as a host (NumPy) int64 array, e.g. to shuffle indices with `host_rng`."""
    return numpy.arange(n)


# ---- random draws --------------------------------------------------------------------------------

def host_generator(seed):
    """A fresh NumPy generator of its own (e.g. a fixed data split that must not depend on, or
    disturb, the global seed)."""
    return numpy.random.default_rng(seed)


def host_normal(shape, std, dtype="float32"):
    """N(0, std^2) drawn on the host generator, returned on the device (same values on every backend)."""
    values = host_rng.standard_normal(shape, dtype=numpy.float32) * numpy.float32(std)
    return from_numpy(values.astype(dtype, copy=False))


def host_uniform(shape, low, high, dtype="float32"):
    """U(low, high) drawn on the host generator, returned on the device."""
    values = host_rng.uniform(low, high, size=shape).astype(dtype)
    return from_numpy(values)


def host_choice(n):
    """One integer in [0, n), uniform, from the host generator: a routing decision."""
    return int(host_rng.integers(n))


def device_uniform(shape, dtype):
    """U[0, 1) drawn on the device generator (for dropout masks)."""
    return _device_rng.random(shape, dtype=dtype)


# ---- scatter-add ---------------------------------------------------------------------------------

def scatter_add(target, index, values):
    """target[index] += values, in place, counting repeated indices once per occurrence.
    (`target[index] += values` keeps only one of the repeated updates on both NumPy and CuPy.)"""
    if name == "cupy":
        import cupyx
        cupyx.scatter_add(target, index, values)
    else:
        numpy.add.at(target, index, values)


# ---- BLAS threads for one product (CPU) -----------------------------------------------------------

_UNSET = object()
_local_blas_threads = _UNSET   # OpenBLAS's openblas_set_num_threads_local (ctypes), or None


def _find_local_blas_threads():
    """NumPy's OpenBLAS function that sets the thread count for BLAS calls made from the calling thread
    only (OpenBLAS 0.3.27 and later), found among the loaded libraries; None where there is none."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:
        return None
    for path in paths:
        try:
            setter = getattr(ctypes.CDLL(path), "openblas_set_num_threads_local", None)
        except OSError:
            continue
        if setter is not None:
            setter.argtypes, setter.restype = [ctypes.c_int], ctypes.c_int
            return setter
    return None


class one_blas_thread:
    """`with one_blas_thread():` BLAS products called inside run on the calling thread alone. For a
    small product a second thread saves microseconds on an idle machine, and on a busy one waits for
    a scheduler time slice (~10 ms, 100x an adapter's product). Does nothing on a GPU, or where
    NumPy's BLAS has no per-thread setting."""

    def __enter__(self):
        global _local_blas_threads
        if _local_blas_threads is _UNSET:
            _local_blas_threads = _find_local_blas_threads() if name == "numpy" else None
        self.previous = None
        if name == "numpy" and _local_blas_threads is not None:
            self.previous = _local_blas_threads(1)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            _local_blas_threads(self.previous)


# ---- host memory ---------------------------------------------------------------------------------

def reuse_freed_memory():
    """A forward or backward pass allocates and frees arrays of several MB at every op. By default
    glibc hands freed blocks at the top of the heap back to the OS and page-faults fresh ones in on the
    next op; a high trim threshold lets it reuse them (MiniLM training step: ~3.5x fewer page faults,
    ~25% less CPU time). Linux with glibc only; elsewhere this does nothing. Importing tinymix does not
    call it: the command line, its worker processes and the lessons' runner do, before any work."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3   # mallopt's parameter numbers
    libc.mallopt(m_trim_threshold, 1 << 30)       # keep up to 1 GB of freed heap for reuse
    libc.mallopt(m_top_pad, 64 << 20)             # grow the heap in 64 MB steps
    libc.mallopt(m_mmap_threshold, 32 << 20)      # blocks up to 32 MB come from the heap


def require():
    """Raise the error of the backend TINYMIX_BACKEND asked for, if it could not be set up. Importing
    tinymix never fails on it (so `--help` works); the first use of `xp`, or this call, does."""
    if _environment_error is not None and "_module" not in xp.__dict__:
        raise _environment_error


_environment_error = None
try:
    set_backend(os.environ.get("TINYMIX_BACKEND", "numpy") or "numpy")
except (ValueError, RuntimeError) as error:
    _environment_error = RuntimeError(f"TINYMIX_BACKEND={os.environ['TINYMIX_BACKEND']!r}: {error}")
