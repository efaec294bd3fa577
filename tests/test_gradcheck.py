"""gradcheck itself: it passes a correct backward and catches a wrong one, naming input and index."""
import numpy as np
import pytest

from tinymix import Tensor, gradcheck

pytestmark = pytest.mark.numerics


def square_with_a_wrong_element(wrong_at):
    """x * x whose backward is right everywhere except at one element, where it forgets the factor 2."""
    def fn(x):
        def backward(g):
            grad = 2.0 * x.data * g
            if wrong_at is not None:
                grad[wrong_at] = x.data[wrong_at] * g[wrong_at]
            x._accumulate(grad)
        return Tensor._make(x.data * x.data, (x,), backward)
    return fn


def inputs(*shapes):
    rng = np.random.default_rng(0)
    return [Tensor(rng.uniform(0.5, 2.0, shape), requires_grad=True) for shape in shapes]


def test_gradcheck_passes_a_correct_backward(backend_name):
    assert gradcheck(square_with_a_wrong_element(None), *inputs((2, 3)))


def test_gradcheck_names_the_input_and_index_of_a_wrong_gradient(backend_name):
    with pytest.raises(AssertionError, match=r"input 0 \(shape \(2, 3\)\) at index \(1, 2\): analytic"):
        gradcheck(square_with_a_wrong_element((1, 2)), *inputs((2, 3)))


def test_gradcheck_names_the_second_input(backend_name):
    square = square_with_a_wrong_element((0, 1))
    with pytest.raises(AssertionError, match=r"input 1 \(shape \(3, 2\)\) at index \(0, 1\)"):
        gradcheck(lambda a, b: a.sum() + square(b), *inputs((2, 2), (3, 2)))


def test_gradcheck_catches_a_gradient_that_never_arrives(backend_name):
    def forgets_b(a, b):
        return Tensor._make(a.data * b.data, (a, b), lambda g: a._accumulate(g * b.data))
    with pytest.raises(AssertionError, match=r"input 1 \(shape \(3,\)\) at index \(0,\)"):
        gradcheck(forgets_b, *inputs((3,), (3,)))


def test_gradcheck_needs_something_to_check(backend_name):
    (x,) = inputs((2,))
    x.requires_grad = False
    with pytest.raises(ValueError, match="at least one input tensor with requires_grad=True"):
        gradcheck(lambda t: t * 2.0, x)


def test_gradcheck_refuses_an_output_cast_below_float64(backend_name):
    with pytest.raises(TypeError, match="returned float32 for float64 inputs"):
        gradcheck(lambda t: Tensor(t.data, dtype=np.float32) * 1.0, *inputs((2,)))


def test_gradcheck_leaves_the_inputs_alone(backend_name):
    (x,) = inputs((2, 2))
    before = x.numpy().copy()
    gradcheck(lambda t: (t * t).sum(), x)
    np.testing.assert_array_equal(x.numpy(), before)
    assert x.grad is None  # it checked float64 copies
