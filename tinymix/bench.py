"""What the autograd costs, in two numbers (`python -m tinymix bench`).

- autograd_overhead: a tiny op is all bookkeeping. Forward + backward of a tracked (8, 8) add, against
  the raw xp add alone. The ratio is the per-op price of the graph, paid on every op however small.
- matmul_throughput: a big op is all arithmetic. Forward + backward of x @ w with x (64*32, 384) and
  w (384, 1536) both trainable (one forward and two backward products), against the same three
  products done by raw xp. A ratio near 1 means the engine adds nothing where the flops are.

Each time is the median of `repeats` runs after a warm-up; on a GPU every run waits for the device.
"""
import time

from . import backend
from .backend import xp
from .tensor import Tensor


def _sync():
    """Wait for queued GPU work, so that the clock measures the work and not its launch."""
    if backend.name == "cupy":
        xp.cuda.get_current_stream().synchronize()


def _median_seconds(run, repeats, warmup=3):
    for _ in range(warmup):
        run()
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _random(shape, seed):
    """Float32 N(0, 1) values on the device, from a generator of their own (the global seed is untouched)."""
    return backend.from_numpy(backend.host_generator(seed).standard_normal(shape, dtype="float32"))


def _autograd_times(repeats, ops_per_run=100):
    """Seconds per op: (tracked add, forward + backward; raw xp add)."""
    a = Tensor(_random((8, 8), 0), requires_grad=True)
    b = Tensor(_random((8, 8), 1), requires_grad=True)
    g = xp.ones((8, 8), dtype=xp.float32)

    def tracked():
        for _ in range(ops_per_run):
            a.grad = b.grad = None
            (a + b).backward(g)

    def raw():
        for _ in range(ops_per_run):
            a.data + b.data  # the result is dropped: only the time counts

    return (_median_seconds(tracked, repeats) / ops_per_run,
            _median_seconds(raw, repeats) / ops_per_run)


def autograd_overhead(repeats=50):
    """Time of a tracked (8, 8) float32 add, forward + backward, over the raw xp add (forward)."""
    tracked, raw = _autograd_times(repeats)
    return tracked / raw


def _matmul_gflops(repeats, rows=64 * 32, inner=384, outer=1536):
    """GFLOP/s: (Tensor x @ w, forward + backward; the same three products in raw xp)."""
    x = Tensor(_random((rows, inner), 2), requires_grad=True)
    w = Tensor(_random((inner, outer), 3), requires_grad=True)
    g = _random((rows, outer), 4)
    flops = 3 * 2 * rows * inner * outer  # out = x @ w, dx = g @ w.T, dw = x.T @ g

    def tracked():
        x.grad = w.grad = None
        (x @ w).backward(g)

    def raw():  # the results are dropped: only the time counts
        x.data @ w.data
        g @ w.data.T
        x.data.T @ g

    return (flops / _median_seconds(tracked, repeats) / 1e9,
            flops / _median_seconds(raw, repeats) / 1e9)


def matmul_throughput(repeats=5):
    """GFLOP/s of a trainable Tensor matmul, forward + backward, over raw xp doing the same flops."""
    tracked, raw = _matmul_gflops(repeats)
    return tracked / raw


def main():
    tracked, raw = _autograd_times(repeats=50)
    print(f"backend: {backend.name}")
    print(f"{'measure':<44}{'tinymix':>12}{'raw xp':>12}{'ratio':>8}")
    print(f"{'tiny op (8x8 add), microseconds per op':<44}{tracked * 1e6:>12.1f}{raw * 1e6:>12.1f}"
          f"{tracked / raw:>8.1f}")
    tracked, raw = _matmul_gflops(repeats=5)
    print(f"{'matmul (2048x384 @ 384x1536), GFLOP/s':<44}{tracked:>12.1f}{raw:>12.1f}{tracked / raw:>8.2f}")
    print("tiny op: tinymix is a tracked forward + backward, raw xp the forward add alone;")
    print("matmul: both do the forward product and the two backward products")
