"""The CuPy stand-in keeps CuPy's contract: what CuPy refuses it refuses, what costs CuPy a transfer it
counts, and the rest computes as NumPy does. (Each behaviour is CuPy 14's, read in cupy/_core.)"""
import copy
import gc
import pickle
import weakref

import numpy as np
import pytest

from cupy_contract import LEDGER, DeviceSynchronized
from cupy_standin import cupy as cp
from cupy_standin import cupyx


@pytest.fixture(autouse=True)
def fresh_ledger():
    LEDGER.reset()


def test_device_arrays_are_their_own_type_and_refuse_implicit_conversion():
    a = cp.arange(6, dtype=cp.float32).reshape(2, 3)
    assert isinstance(a, cp.ndarray) and not isinstance(a, np.ndarray) and a.dtype == np.float32
    for convert in (np.asarray, np.array, lambda x: np.testing.assert_allclose(x, 0), lambda x: x.__array__()):
        with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
            convert(a)
    assert LEDGER.total() == 0


def test_host_arrays_and_lists_do_not_mix_with_device_arrays():
    a, host = cp.ones(3), np.ones(3)
    for mix in (lambda: a + host, lambda: host + a, lambda: a * [1, 2, 3], lambda: cp.exp(host),
                lambda: cp.maximum(a, host), lambda: cp.concatenate([a, host]), lambda: cp.linalg.svd(np.eye(2))):
        with pytest.raises(TypeError):
            mix()
    with pytest.raises(TypeError):
        a += host
    assert (a + np.float32(2.0)).dtype == np.float64 and (a == np.array(1.0)).all().item()  # scalars are fine
    assert cp.allclose(a, host).item()                     # allclose copies a host array over, as CuPy's
    assert LEDGER.uploads["host array argument"] == 1


def test_results_stay_on_the_device_and_each_read_back_is_counted():
    a = cp.arange(4, dtype=cp.float32)
    total = a.sum()
    assert isinstance(total, cp.ndarray) and total.shape == () and isinstance(a[1], cp.ndarray)
    assert isinstance(cp.allclose(a, a), cp.ndarray) and LEDGER.total() == 0
    float(total), int(a[1]), bool(a[1] > 0), total.item(), a.tolist(), a.get(), cp.asnumpy(a), f"{total}"
    assert dict(LEDGER.transfers) == {"float": 1, "int": 1, "bool": 1, "item": 1, "tolist": 1, "get": 2,
                                      "format": 1}
    assert np.array_equal(a.get(), np.arange(4)) and a.get() is not a.get()   # .get() is a copy


def test_hidden_transfers_are_counted_and_refused_where_synchronising_is_not_allowed():
    a = cp.arange(6)
    a[a > 2], a.nonzero(), cp.flatnonzero(a)
    assert dict(LEDGER.transfers) == {"boolean mask indexing": 1, "ndarray.nonzero": 1, "flatnonzero": 1}
    with cp._core.syncdetect.allow_synchronize(False):
        b = (a * 2 + 1).sum()                                   # compute freely ...
        with pytest.raises(DeviceSynchronized):
            float(b)                                            # ... but no read back
    assert float(b) == 36.0


def test_indexing_as_cupy_does_it():
    a = cp.arange(5) * 10
    assert a[cp.asarray([1, 7, -1])].tolist() == [10, 20, 40]  # out of range wraps around, no IndexError
    with pytest.raises(IndexError):
        a[7]                                                    # a plain integer is still checked
    a[np.array([0, 0])] = 5                                     # host indices and values are moved over
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        a[1:3] = np.array([1, 2])                              # a slice is filled from a scalar only
    target = cp.zeros(3)
    cupyx.scatter_add(target, cp.asarray([0, 2, 2]), cp.ones(3))
    assert target.tolist() == [1.0, 0.0, 2.0]


def test_what_cupy_lacks_is_missing_and_memory_behaves_like_memory():
    assert not hasattr(cp.random.default_rng(0), "permutation") and not hasattr(cp, "busday_count")
    assert not hasattr(cp.ndarray, "__index__")                # range(device_scalar) fails, as on CuPy
    assert np.isnan(cp.empty(3).get()).all()                    # uninitialised memory shows as NaN
    a = cp.ones((4, 3))
    view = a.reshape(12)
    alive = weakref.ref(a)
    del a
    gc.collect()
    assert alive() is view.base                                 # a view keeps its base, as in CuPy
    pool = cp.get_default_memory_pool()
    used = pool.used_bytes()
    big = cp.zeros(1 << 20, dtype=cp.float32)
    assert pool.used_bytes() == used + (4 << 20) and pool.total_bytes() >= pool.used_bytes()
    del big
    assert pool.used_bytes() == used
    assert copy.deepcopy(view).tolist() == [1.0] * 12 and pickle.loads(pickle.dumps(view)).shape == (12,)
