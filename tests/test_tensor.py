"""The Tensor primitives and the autograd engine: gradients (central differences), float32 all the way,
the life of the graph, and errors that say what went wrong."""
import gc
import weakref

import numpy as np
import pytest

from tinymix import Tensor, functional, concatenate, gradcheck, is_grad_enabled, no_grad, stack, where
from tinymix import backend

pytestmark = pytest.mark.numerics

SEEDS = (0, 1, 2)


def make_inputs(specs, seed, dtype=np.float32):
    """Tensors that require grad, one per (shape, kind). Kinds keep values where the op is smooth:
    "normal" N(0, 1); "positive" in [0.5, 2] (log, sqrt, powers); "nonzero" |x| in [0.5, 2]
    (denominators, relu away from its kink)."""
    rng = np.random.default_rng(seed)
    tensors = []
    for shape, kind in specs:
        if kind == "positive":
            values = rng.uniform(0.5, 2.0, shape)
        elif kind == "nonzero":
            values = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
        else:
            values = rng.standard_normal(shape)
        tensors.append(Tensor(np.asarray(values, dtype=dtype), requires_grad=True, dtype=dtype))
    return tensors


def index(values):
    """An integer or boolean index on the active backend."""
    return Tensor(np.asarray(values))


def N(*shape):
    return (shape, "normal")


def P(*shape):
    return (shape, "positive")


def NZ(*shape):
    return (shape, "nonzero")


def case(name, fn, *specs):
    return pytest.param(fn, specs, id=name)


MASK = np.array([[True, False, True, True], [False, False, True, False], [True, True, False, True]])

PRIMITIVES = [
    # arithmetic, with every kind of broadcasting and Python numbers on either side
    case("add", lambda a, b: a + b, N(3, 4), N(3, 4)),
    case("add-row", lambda a, b: a + b, N(3, 4), N(4)),
    case("add-outer", lambda a, b: a + b, N(2, 1, 4), N(3, 1)),
    case("add-scalar-tensor", lambda a, b: a + b, N(2, 3), N()),
    case("add-number", lambda a: 2.5 + a + 1.5, N(2, 3)),
    case("sub", lambda a, b: a - b, N(3, 4), N(3, 1)),
    case("sub-number", lambda a: 1.5 - a - 2.0, N(2, 3)),
    case("mul", lambda a, b: a * b, N(2, 3, 4), N(3, 4)),
    case("mul-self", lambda a: a * a, N(2, 3)),
    case("mul-number", lambda a: 0.5 * a * 3.0, N(2, 3)),
    case("div", lambda a, b: a / b, N(3, 4), NZ(3, 4)),
    case("div-broadcast", lambda a, b: a / b, N(2, 3), NZ(2, 1)),
    case("div-number", lambda a: 2.0 / a + a / 4.0, NZ(2, 3)),
    case("pow-2", lambda a: a ** 2, N(2, 3)),
    case("pow-3", lambda a: a ** 3, N(2, 3)),
    case("pow-half", lambda a: a ** 0.5, P(2, 3)),
    case("pow-negative", lambda a: a ** -1.5, P(2, 3)),
    case("neg", lambda a: -a, N(2, 3)),
    # matrix products
    case("matmul-2d", lambda a, b: a @ b, N(3, 4), N(4, 2)),
    case("matmul-batched", lambda a, b: a @ b, N(2, 3, 4), N(2, 4, 2)),
    case("matmul-broadcast-batch", lambda a, b: a @ b, N(2, 1, 3, 2), N(3, 2, 2)),
    case("matmul-2d-weight", lambda a, b: a @ b, N(2, 3, 4), N(4, 2)),
    case("matmul-2d-weight-4d", lambda a, b: a @ b, N(2, 2, 1, 3), N(3, 2)),
    case("matmul-2d-left", lambda a, b: a @ b, N(3, 4), N(2, 4, 2)),
    # elementwise functions
    case("exp", lambda a: a.exp(), N(2, 3)),
    case("log", lambda a: a.log(), P(2, 3)),
    case("sqrt", lambda a: a.sqrt(), P(2, 3)),
    case("tanh", lambda a: a.tanh(), N(2, 3)),
    case("relu", lambda a: a.relu(), NZ(3, 4)),
    # reductions over int, negative int, tuple and None axes, with and without keepdims
    case("sum-all", lambda a: a.sum(), N(2, 3, 4)),
    case("sum-0", lambda a: a.sum(axis=0), N(2, 3, 4)),
    case("sum-last-keep", lambda a: a.sum(axis=-1, keepdims=True), N(2, 3, 4)),
    case("sum-tuple", lambda a: a.sum(axis=(0, 2)), N(2, 3, 4)),
    case("sum-tuple-keep", lambda a: a.sum(axis=(0, -1), keepdims=True), N(2, 3, 4)),
    case("sum-all-keep", lambda a: a.sum(keepdims=True), N(2, 3)),
    case("mean-all", lambda a: a.mean(), N(2, 3, 4)),
    case("mean-1", lambda a: a.mean(axis=1), N(2, 3, 4)),
    case("mean-last-keep", lambda a: a.mean(axis=-1, keepdims=True), N(2, 3, 4)),
    case("mean-tuple", lambda a: a.mean(axis=(0, 2)), N(2, 3, 4)),
    case("mean-tuple-keep", lambda a: a.mean(axis=(1, 2), keepdims=True), N(2, 3, 4)),
    case("mean-all-keep", lambda a: a.mean(keepdims=True), N(3, 4)),
    case("max-all", lambda a: a.max(), N(2, 3, 4)),
    case("max-0", lambda a: a.max(axis=0), N(2, 3, 4)),
    case("max-last-keep", lambda a: a.max(axis=-1, keepdims=True), N(2, 3, 4)),
    case("max-tuple", lambda a: a.max(axis=(0, 2)), N(2, 3, 4)),
    case("max-tuple-keep", lambda a: a.max(axis=(1, 2), keepdims=True), N(2, 3, 4)),
    case("max-all-keep", lambda a: a.max(keepdims=True), N(3, 4)),
    # shapes
    case("reshape", lambda a: a.reshape(6, 4), N(2, 3, 4)),
    case("reshape-tuple-infer", lambda a: a.reshape((4, -1)), N(2, 3, 4)),
    case("transpose-reverse", lambda a: a.transpose(), N(2, 3, 4)),
    case("transpose-102", lambda a: a.transpose(1, 0, 2), N(2, 3, 4)),
    case("transpose-201", lambda a: a.transpose((2, 0, 1)), N(2, 3, 4)),
    case("transpose-negative", lambda a: a.transpose(0, -1, 1), N(2, 3, 4)),
    case("transpose-4d", lambda a: a.transpose(1, 3, 0, 2), N(2, 1, 3, 2)),
    case("T", lambda a: a.T, N(3, 4)),
    # indexing and slicing
    case("index-int", lambda a: a[1], N(3, 4)),
    case("index-slices", lambda a: a[:, 1:3], N(3, 4)),
    case("index-step-ellipsis", lambda a: a[..., ::2], N(2, 3, 4)),
    case("index-negative-none", lambda a: a[None, -1], N(3, 4)),
    case("index-repeated-rows", lambda a: a[index([0, 2, 0, 0])], N(3, 4)),
    case("index-repeated-pairs", lambda a: a[index([0, 0, 2]), index([1, 1, 3])], N(3, 4)),
    case("index-slice-and-array", lambda a: a[1:, index([3, 0, 3])], N(3, 4)),
    case("index-mask", lambda a: a[index(MASK)], N(3, 4)),
    # several tensors
    case("concatenate-0", lambda a, b: concatenate([a, b], axis=0), N(2, 3), N(1, 3)),
    case("concatenate-last", lambda a, b, c: concatenate([a, b, c], axis=-1), N(2, 1), N(2, 3), N(2, 2)),
    case("stack-0", lambda a, b: stack([a, b]), N(2, 3), N(2, 3)),
    case("stack-last", lambda a, b, c: stack([a, b, c], axis=-1), N(2, 3), N(2, 3), N(2, 3)),
    case("where", lambda a, b: where(index(MASK), a, b), N(3, 4), N(3, 4)),
    case("where-broadcast", lambda a, b: where(index(MASK[0]), a, b), N(3, 4), N(3, 1)),
    case("where-number", lambda a: where(index(MASK), a, 0.5) + where(index(MASK), -1.0, a), N(3, 4)),
    # a small composite: the graph with shared subexpressions
    case("composite", lambda a, b: ((a @ b).tanh() * a.sum(axis=1, keepdims=True)).exp().mean(),
         N(3, 4), N(4, 2)),
]

NUMPY_SCALARS = {  # NumPy scalars are not "weak" under NumPy 2: float32 must survive them anyway
    "mul": lambda a: a * np.float64(1.5),
    "rmul": lambda a: np.float64(1.5) * a,
    "add-sub": lambda a: np.float64(2.0) - a + np.float64(0.5),
    "div": lambda a: a / np.float64(3.0) + np.float64(3.0) / a,
    "pow": lambda a: a ** np.float64(2.0),
    "where": lambda a: where(index(MASK), a, np.float64(0.25)),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn, specs", PRIMITIVES)
def test_primitive_gradient_matches_central_differences(backend_name, fn, specs, seed):
    assert gradcheck(fn, *make_inputs(specs, seed))


def _check_float32(fn, inputs):
    out = fn(*inputs)
    assert out.dtype == np.float32, f"forward gave {out.dtype}"
    weights = Tensor(np.linspace(-1.0, 1.0, out.size).reshape(out.shape))  # a float32 tensor
    (out * weights).sum().backward()
    for position, t in enumerate(inputs):
        assert t.grad is not None, f"input {position} got no gradient"
        assert t.grad.dtype == np.float32, f"input {position}: backward gave {t.grad.dtype}"
        assert t.grad.shape == t.shape


@pytest.mark.parametrize("fn, specs", PRIMITIVES)
def test_primitive_keeps_float32(backend_name, fn, specs):
    _check_float32(fn, make_inputs(specs, 0))


@pytest.mark.parametrize("name", NUMPY_SCALARS)
def test_numpy_scalars_keep_float32(backend_name, name):
    _check_float32(NUMPY_SCALARS[name], make_inputs([P(3, 4)], 0))


# ---- values and gradients against NumPy -------------------------------------------------------------

def test_forward_values_match_numpy(backend_name):
    a, b = make_inputs([P(2, 3, 4), NZ(4, 2)], 3)
    x, y = a.numpy(), b.numpy()
    expected = {
        "a @ b": (a @ b, x @ y),
        "a / 2 - a ** 2": (a / 2.0 - a ** 2, x / 2 - x ** 2),
        "log, sqrt, exp, tanh": (a.log() + a.sqrt() - a.exp() * a.tanh(),
                                 np.log(x) + np.sqrt(x) - np.exp(x) * np.tanh(x)),
        "relu": (b.relu(), np.maximum(y, 0)),
        "max(1)": (a.max(axis=1), x.max(axis=1)),
        "mean((0, 2))": (a.mean(axis=(0, 2), keepdims=True), x.mean(axis=(0, 2), keepdims=True)),
        "transpose": (a.transpose(2, 0, 1), x.transpose(2, 0, 1)),
        "fancy index": (a[1, index([0, 2, 2])], x[1, [0, 2, 2]]),
        "stack": (stack([a, a * 2.0], axis=1), np.stack([x, 2 * x], axis=1)),
    }
    for name, (got, want) in expected.items():
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_repeated_indices_add_up(backend_name):
    (a,) = make_inputs([N(4, 3)], 0)
    a[index([2, 0, 2, 2])].sum().backward()
    expected = np.zeros((4, 3), np.float32)
    expected[0], expected[2] = 1.0, 3.0  # row 2 was picked three times
    np.testing.assert_array_equal(backend.to_numpy(a.grad), expected)


def test_repeated_index_pairs_add_up(backend_name):
    (a,) = make_inputs([N(3, 3)], 0)
    weights = Tensor(np.array([1.0, 10.0, 100.0], np.float32))
    (a[index([1, 1, 0]), index([2, 2, 0])] * weights).sum().backward()
    expected = np.zeros((3, 3), np.float32)
    expected[1, 2], expected[0, 0] = 11.0, 100.0
    np.testing.assert_array_equal(backend.to_numpy(a.grad), expected)


def test_boolean_mask_gradient_lands_on_the_mask(backend_name):
    (a,) = make_inputs([N(3, 4)], 0)
    picked = a[index(MASK)]
    assert picked.shape == (int(MASK.sum()),)
    picked.sum().backward()
    np.testing.assert_array_equal(backend.to_numpy(a.grad), MASK.astype(np.float32))


def test_max_shares_gradient_among_ties(backend_name):
    a = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]], np.float32), requires_grad=True)
    a.max(axis=1).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(a.grad), [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])


def test_relu_gradient_is_zero_below_zero(backend_name):
    a = Tensor(np.array([-2.0, -0.5, 0.5, 2.0], np.float32), requires_grad=True)
    a.relu().sum().backward()
    np.testing.assert_array_equal(backend.to_numpy(a.grad), [0.0, 0.0, 1.0, 1.0])


# ---- the graph: accumulation, zeroing, no_grad, frozen inputs, depth, release -------------------------

def test_gradients_accumulate_until_zeroed(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    x = a.numpy()
    (a * a).sum().backward()
    once = backend.to_numpy(a.grad).copy()
    np.testing.assert_allclose(once, 2 * x, rtol=1e-6)
    (a * a).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(a.grad), 4 * x, rtol=1e-6)
    a.zero_grad()
    assert a.grad is None
    (a * a).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(a.grad), once, rtol=1e-6)


def test_a_tensor_used_twice_gets_both_contributions(backend_name):
    (a,) = make_inputs([N(3)], 0)
    (a * 3.0 + a.exp()).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(a.grad), 3.0 + np.exp(a.numpy()), rtol=1e-6)


def test_leaf_gradients_are_writable_and_not_shared(backend_name):
    # optimizers clip or scale .grad in place: each leaf must own its gradient array
    a, b = make_inputs([N(2, 3), N(2, 3)], 0)
    (a + b).sum().backward()
    a.grad *= 0.5
    np.testing.assert_array_equal(backend.to_numpy(b.grad), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(backend.to_numpy(a.grad), np.full((2, 3), 0.5, np.float32))


def test_no_grad_builds_no_graph(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    assert is_grad_enabled()
    with no_grad():
        assert not is_grad_enabled()
        out = (a * 2.0).exp().sum()
    assert is_grad_enabled()
    assert not out.requires_grad
    assert out._parents == () and out._backward is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        out.backward()
    assert a.grad is None


def test_no_grad_restores_the_mode_after_an_error():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_frozen_inputs_get_no_gradient(backend_name):
    trainable, frozen = make_inputs([N(3, 4), N(4, 2)], 0)
    frozen.requires_grad = False
    hidden = trainable @ frozen
    hidden.tanh().sum().backward()
    assert frozen.grad is None
    assert trainable.grad is not None
    assert hidden.grad is None  # intermediate gradients are dropped after use


def test_an_op_on_frozen_inputs_only_is_not_tracked(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    a.requires_grad = False
    out = (a * a).sum()
    assert not out.requires_grad and out._backward is None


def test_the_graph_keeps_only_the_arrays_backward_needs():
    # x * w keeps x only if w needs a gradient; a Linear with a frozen weight keeps nothing of its
    # input. So a frozen backbone's activations are freed during the forward, as in PyTorch.
    x = Tensor(np.ones((4, 3), np.float32), requires_grad=True)
    frozen = Tensor(np.full((5, 3), 0.5, np.float32))
    trainable = Tensor(np.full((5, 3), 0.5, np.float32), requires_grad=True)
    kept = {}
    for name, weight in (("frozen", frozen), ("trainable", trainable)):
        hidden = x * 2.0                                    # an intermediate result
        alive = weakref.ref(hidden.data)
        out = functional.linear(hidden, weight) * Tensor(np.ones(5, np.float32))
        del hidden
        gc.collect()
        kept[name] = alive() is not None
        out.sum().backward()
    assert kept == {"frozen": False, "trainable": True}
    np.testing.assert_allclose(backend.to_numpy(x.grad), np.full((4, 3), 2 * 2 * 5 * 0.5, np.float32))  # both passes


def test_detach_cuts_the_graph(backend_name):
    (a,) = make_inputs([N(3)], 0)
    (a * a.detach()).sum().backward()
    np.testing.assert_allclose(backend.to_numpy(a.grad), a.numpy(), rtol=1e-6)  # not 2a


def test_a_10000_op_chain_needs_no_recursion():
    (a,) = make_inputs([P(4)], 0)
    out = a
    for _ in range(10_000):
        out = out * 1.0001
    out.sum().backward()
    expected = np.full(4, 1.0001 ** 10_000, np.float32)
    np.testing.assert_allclose(backend.to_numpy(a.grad), expected, rtol=1e-3)


def test_the_graph_is_released_after_backward(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    loss = (a * a).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="already released"):
        loss.backward()


def test_a_shared_subgraph_released_by_one_loss_errors_for_the_other(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    hidden = a.exp()
    first, second = hidden.sum(), (hidden * 2.0).sum()
    first.backward()
    with pytest.raises(RuntimeError, match="already released"):
        second.backward()


# ---- bad input: clear errors that name the shapes or values ----------------------------------------

def test_matmul_shape_mismatch_names_the_shapes(backend_name):
    a, b = make_inputs([N(3, 4), N(5, 2)], 0)
    with pytest.raises(ValueError, match=r"\(3, 4\) @ \(5, 2\).*\(4\).*\(5\)"):
        a @ b


def test_matmul_needs_two_axes(backend_name):
    a, b = make_inputs([N(4), N(4, 2)], 0)
    with pytest.raises(ValueError, match=r"at least 2 axes.*\(4,\) and \(4, 2\)"):
        a @ b


def test_backward_needs_a_tensor_that_requires_grad(backend_name):
    t = Tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        t.sum().backward()


def test_non_scalar_backward_needs_an_explicit_grad(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\) needs an explicit grad"):
        (a * 2.0).backward()


def test_backward_rejects_a_grad_of_the_wrong_shape(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    with pytest.raises(ValueError, match=r"grad of shape \(3, 2\) for a tensor of shape \(2, 3\)"):
        (a * 2.0).backward(np.ones((3, 2), np.float32))


def test_backward_with_an_explicit_grad(backend_name):
    (a,) = make_inputs([N(2, 3)], 0)
    g = np.arange(6, dtype=np.float32).reshape(2, 3)
    (a * 3.0).backward(g)
    np.testing.assert_allclose(backend.to_numpy(a.grad), 3.0 * g)


def test_only_floating_tensors_can_require_grad():
    with pytest.raises(TypeError, match="floating-point.*int64"):
        Tensor([1, 2, 3], requires_grad=True)


def test_transpose_rejects_a_non_permutation(backend_name):
    (a,) = make_inputs([N(2, 3, 4)], 0)
    with pytest.raises(ValueError, match=r"\(0, 0, 1\) are not a permutation.*\(2, 3, 4\)"):
        a.transpose(0, 0, 1)


def test_pow_rejects_a_tensor_exponent(backend_name):
    a, b = make_inputs([P(2), N(2)], 0)
    with pytest.raises(TypeError, match="exponent, got Tensor"):
        a ** b


# ---- construction ----------------------------------------------------------------------------------

def test_tensor_dtypes(backend_name):
    assert Tensor([0.5, 1.5]).dtype == np.float32  # Python floats would be float64 in NumPy
    assert Tensor(2.0).dtype == np.float32
    assert Tensor(np.zeros(3)).dtype == np.float32  # float64 host data is cast down
    assert Tensor(np.zeros(3), dtype=np.float64).dtype == np.float64  # unless float64 is asked for
    assert Tensor([1, 2]).dtype.kind == "i"  # integers stay integers (labels, ids)
    assert Tensor([True, False]).dtype == np.bool_
    assert backend.is_array(Tensor([1.0]).data)
