"""Closeness at the scale the compared values live at.

float32 keeps about seven significant digits (unit roundoff 6e-8), and a sum may be rounded in any
order: BLAS picks its kernel and its blocking by CPU and thread count, a GPU by its own schedule. So
two correct computations of the same tensor differ by rounding errors that grow with the size of the
terms summed, not with each result: an entry near zero in a tensor whose other entries are O(10) may
be off by 1e-6, all of it rounding. A tolerance relative to each entry alone fails it; a fixed
absolute one fails a tensor whose values happen to be large. Here each entry is judged against the
scale of the whole tensor (or a scale the caller gives, such as the model's largest gradient):

    |actual - expected| <= rel * (|expected| + scale),    scale = max |expected| unless given

The default rel = 1e-5 is about 170 float32 roundings (6e-8) at the scale of the tensor. Models in
these tests differ by up to about 8 of them between OpenBLAS's CPU kernels, while a real error (a
wrong mask, route, mean or fold) is off by a per cent or more of the scale.
"""
import numpy as np

from tinymix import backend


def _host(values):
    return np.asarray(backend.to_numpy(values), dtype=np.float64)


def _scale(expected, scale):
    if scale is not None:
        return scale
    return float(np.abs(expected).max()) if expected.size else 0.0


def close(actual, expected, rel=1e-5, scale=None):
    """True if `actual` equals `expected` up to `rel` at the scale of `expected` (see above)."""
    actual, expected = _host(actual), _host(expected)
    return actual.shape == expected.shape and bool(
        np.allclose(actual, expected, rtol=rel, atol=rel * _scale(expected, scale)))


def assert_close(actual, expected, rel=1e-5, scale=None, err_msg=""):
    """Fail, saying where and by how much, unless `actual` is close to `expected` (see above)."""
    actual, expected = _host(actual), _host(expected)
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * _scale(expected, scale), err_msg=err_msg)
