"""How the fused ops' arrays are computed fast on the CPU, where NumPy runs one pass over memory per
operation and OpenBLAS has its own preferences: GELU's erf in cache-sized blocks and few passes, row
reductions that avoid NumPy's slow short-axis loops, row-major operands for the heads' small products,
small products on one BLAS thread. Each helper computes what its plain NumPy expression would, and on a
GPU (CuPy) falls back to that expression where the CPU's reasons do not apply.
"""
import math

from . import backend
from .backend import xp

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def row_major(a):
    """`a` itself if it is row-major (C-contiguous), else a row-major copy (see the notes on attention
    at the end of this file).
    On a GPU `a` as it is: the layout rule is the CPU BLAS's."""
    return xp.ascontiguousarray(a) if backend.name == "numpy" else a


# NumPy reduces along a short last axis (attention's rows: a few dozen keys; layer norm's 384
# features) one row at a time, at several times the cost of an elementwise pass. The helpers below get
# the same results faster on the CPU; on a GPU the plain reductions are one kernel each and stay.

def row_max(a):
    """a.max(axis=-1, keepdims=True), by halving: elementwise maxima of the two halves of the last
    axis, log2(n) times (the odd element out joins the first column). Max is exact, so this equals
    the reduction bit for bit."""
    if backend.name != "numpy":
        return a.max(axis=-1, keepdims=True)
    while a.shape[-1] > 1:
        half = a.shape[-1] // 2
        top = xp.maximum(a[..., :half], a[..., half:2 * half])
        if a.shape[-1] % 2:
            xp.maximum(top[..., :1], a[..., 2 * half:], out=top[..., :1])
        a = top
    return a


def row_mean(a):
    """a.mean(axis=-1, keepdims=True), from row_sum."""
    return row_sum(a) / a.shape[-1]


def row_sum(a):
    """a.sum(axis=-1, keepdims=True) as one matrix-vector product with a vector of ones (BLAS adds
    in its own order: equal to float32 rounding, not bit for bit)."""
    if backend.name != "numpy":
        return a.sum(axis=-1, keepdims=True)
    n = a.shape[-1]
    with backend.one_blas_thread():         # memory-bound: a second thread has little to add
        sums = a.reshape(-1, n) @ xp.ones(n, dtype=a.dtype)
    return sums.reshape(*a.shape[:-1], 1)


# Abramowitz & Stegun 7.1.26: erfc(z) = P(t) exp(-z^2) to within 1.5e-7 for z >= 0, t = 1 / (1 + p z)
_AS_P = 0.3275911
_AS_COEFFICIENTS = (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)   # a5 ... a1


# Elements per block of GELU's erf on the CPU: the dozen temporaries of a block (256 kB each) stay in
# the L2 cache instead of streaming a 10 MB activation through memory a dozen times (1.6x faster).
_GELU_BLOCK = 1 << 16


def gelu_block(v, out, derivative=None):
    """GELU of one block v into `out`, and, if `derivative` is given, Phi(v) + v phi(v) into it.
    NumPy has no erf, so with a = |v|, A&S 7.1.26 at z = a / sqrt(2) gives the lower tail
        Phi(-a) = erfc(z) / 2 = P(t) / 2 * exp(-a^2 / 2),  t = 1 / (1 + p a / sqrt(2)),
        P(t) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))),
    and then, for either sign of v,  Phi(v) = | [v >= 0] - Phi(-a) |  (1 - Phi(-a), or Phi(-a)).
    Each line is one pass over the block, written into an existing array (`*=`, out=): a pass costs
    about the same whatever it computes, so the formula is arranged for few of them (the 1/2 sits in
    the coefficients, the sign in one comparison). exp(-a^2 / 2) = sqrt(2 pi) phi(v) is reused for
    the derivative. The output is computed the same way with or without the derivative: a pass
    recomputed without a graph (AdaMix's low-memory step) gives the same values."""
    a = xp.abs(v)
    t = a * (_AS_P / math.sqrt(2.0))
    t += 1.0
    xp.divide(1.0, t, out=t)
    tail = t * (0.5 * _AS_COEFFICIENTS[0])
    for coefficient in _AS_COEFFICIENTS[1:]:
        tail += 0.5 * coefficient
        tail *= t                                     # P(t) / 2
    gaussian = a * -0.5
    gaussian *= a
    xp.exp(gaussian, out=gaussian)                    # exp(-v^2 / 2)
    tail *= gaussian                                  # Phi(-|v|)
    cdf = xp.subtract(v >= 0.0, tail, out=tail)
    xp.abs(cdf, out=cdf)                              # Phi(v)
    xp.multiply(v, cdf, out=out)                      # v Phi(v)
    if derivative is not None:
        gaussian *= v
        gaussian *= _INV_SQRT_2PI                     # v phi(v)
        xp.add(cdf, gaussian, out=derivative)


def gelu_erf(v, with_derivative):
    """(v Phi(v), and if asked Phi(v) + v phi(v)) for the exact erf form, block by block on the CPU;
    in one block on a GPU, where a block per kernel launch would only add launches."""
    flat = v.reshape(-1)
    out = xp.empty_like(flat)
    derivative = xp.empty_like(flat) if with_derivative else None
    block = flat.size if backend.name == "cupy" else _GELU_BLOCK
    for start in range(0, flat.size, block):
        part = slice(start, start + block)
        gelu_block(flat[part], out[part], None if derivative is None else derivative[part])
    return out.reshape(v.shape), None if derivative is None else derivative.reshape(v.shape)


# A product of fewer multiply-adds than this runs on one BLAS thread (backend.one_blas_thread): an
# adapter's (N, 384) @ (384, 16), or its weight gradient. OpenBLAS itself splits products from 262,144
# on; below 2^24 a second thread saves tens of microseconds on an idle machine and, when the other core
# is busy, can wait ~10 ms for it (measured at 2 threads, load 7: 0.14 ms on one thread, 10.8 ms on two).
_SMALL_PRODUCT = 1 << 24


def product(a, b):
    """a @ b for 2-D a (m, k), b (k, n); a small one on one BLAS thread."""
    if a.shape[0] * a.shape[1] * b.shape[1] < _SMALL_PRODUCT:
        with backend.one_blas_thread():
            return a @ b
    return a @ b


# ---- notes: how functional.py's ops run fast, op by op --------------------------------------------------
# functional.py states each op's math; these are the engineering choices that make its arrays cheap.
#
# attention: one graph node instead of five. The scores become the weights in place (_softmax_in_place),
#   and backward keeps y and a boolean dropout mask instead of the scores, y and the dropped weights; the
#   dropped weights are rebuilt from y and the mask when dv needs them. Layouts: the heads' small products
#   (head size 32) go to BLAS one (T, D) matrix at a time, and on the CPU they run 2-4x slower when one
#   operand is row-major and the other column-major (a transposed view) than when both are the same. So
#   the keys are copied once into row-major (..., D, S) for q k (row_major), the values transposed into
#   row-major (..., D, S) for g v^T, and dq uses the keys as they came, (..., S, D) row-major once
#   swapped: every product pairs like with like. ds is written over dy (_softmax_backward).
# layer norm: arrays are reused in place where the formula allows (x - mean becomes xhat; dxhat becomes
#   dx): two full-size arrays made per direction instead of five or six. Row means are products with a
#   vector of ones (row_mean, row_sum): 3x faster than NumPy's mean over 384 columns.
# GELU: the derivative is computed with the forward, from the same erf and exp(-v^2/2) (gelu_erf), and
#   is the only array backward keeps (not v, Phi and exp(-v^2/2)); without a graph it is skipped.
#   Backward multiplies g into it in place: backward runs once, then the graph is released.
# linear: one node instead of three (transpose, matmul, add): the bias is added in place into the
#   product, every row goes through ONE 2-D matrix product (product), and a frozen weight keeps no input
#   and costs no dW product.
# dropout: the mask stays boolean (a quarter of a float32 mask's memory, kept until backward) and
#   multiplies the float array before the scale does (bool * 1.25 would promote to float64).
