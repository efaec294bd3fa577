# %% [markdown]
# # Lesson 02 — gradient checking
#
# Objective: know how to prove that a backward function is right, and why the proof runs in float64
# with a step of about 1e-6.
#
# Prerequisites: lesson 01.
#
# A backward function that is slightly wrong does not crash: the model still trains, only worse,
# and nothing tells you. The one reliable test is to compare the analytic gradient with a numerical
# one, computed from the definition of the derivative:
#
#     forward difference:  f'(x) ~ (f(x + e) - f(x)) / e            error ~ e f''/2     (order e)
#     central difference:  f'(x) ~ (f(x + e) - f(x - e)) / (2 e)    error ~ e^2 f'''/6  (order e^2)
#
# Both also suffer rounding: f is only known to a relative precision u (about 1.1e-16 in float64,
# 6e-8 in float32), and dividing by e magnifies that to about u |f| / e. Small e: rounding wins;
# large e: truncation wins. For the central difference the total error is smallest near
# e ~ u^(1/3): about 5e-6 in float64, but 4e-3 in float32, where the best achievable error is
# already around 1e-5 relative — too coarse to tell a right gradient from a slightly wrong one.

# %%
import support  # noqa: F401  (the repository on sys.path when run as a script)
from support import save_figure

import matplotlib.pyplot as plt

from tinymix import Tensor
from tinymix.backend import host, xp


def f(x):                                     # works on Tensors and on plain xp arrays
    return (x * 1.3).tanh() * x.exp() if isinstance(x, Tensor) else xp.tanh(x * 1.3) * xp.exp(x)


x0 = 0.4
x = Tensor(x0, requires_grad=True, dtype=xp.float64)
f(x).backward()
exact = float(x.grad)                         # the analytic derivative, from autograd

steps = host.logspace(-12, -0.5, 47)
errors = {}
for dtype in ("float64", "float32"):
    point = xp.asarray(x0, dtype=dtype)
    for kind in ("forward", "central"):
        row = []
        for e in steps:
            e_cast = xp.asarray(e, dtype=dtype)
            if kind == "forward":
                estimate = (f(point + e_cast) - f(point)) / e_cast
            else:
                estimate = (f(point + e_cast) - f(point - e_cast)) / (2 * e_cast)
            row.append(max(abs(float(estimate) - exact), 1e-17))
        errors[kind, dtype] = host.array(row)

figure, axes = plt.subplots(figsize=(7, 4.5))
for (kind, dtype), row in errors.items():
    axes.loglog(steps, row, "-" if dtype == "float64" else "--", label=f"{kind} difference, {dtype}",
                color="C0" if kind == "central" else "C1", linewidth=1.6 if dtype == "float64" else 1.2)
axes.axvline(1e-6, color="0.6", linewidth=0.8)
axes.text(1.3e-6, 0.03, "gradcheck's step, 1e-6", fontsize=8, color="0.3",
          transform=axes.get_xaxis_transform())
axes.set(xlabel="step e", ylabel="|numerical - analytic| derivative",
         title="finite differences: truncation (right) against rounding (left)")
axes.legend(fontsize=8)
save_figure(figure, "02_finite_difference_error.png")

best = {key: row.min() for key, row in errors.items()}
for key, value in best.items():
    print(f"best error, {key[0]:7s} difference in {key[1]}: {value:.1e} at e = {steps[errors[key].argmin()]:.0e}")

# %% [markdown]
# What the figure shows, as checks: central beats forward by orders of magnitude; in float64 it
# reaches about 1e-10 or better; float32 cannot get below about 1e-6. On the right, where truncation
# dominates, the slopes are the orders: 1 for forward, 2 for central.

# %%
assert best["central", "float64"] < 1e-9
assert best["central", "float64"] < best["forward", "float64"] / 100
assert best["central", "float32"] > 1e-7, "float32 rounding hides errors smaller than about 1e-6"
right = (steps > 1e-3) & (steps < 1e-1)
for kind, order in (("forward", 1), ("central", 2)):
    slope = host.polyfit(host.log(steps[right]), host.log(errors[kind, "float64"][right]), 1)[0]
    print(f"{kind} difference: error slope {slope:.2f} (order {order})")
    assert abs(slope - order) < 0.3

# %% [markdown]
# ## Checking a whole tensor function
#
# For a function with many inputs and outputs, tinymix's `gradcheck`:
# 1. casts every input to float64 (see above);
# 2. reduces a non-scalar output to the scalar L = sum(out * r) with a fixed, non-trivial r, so that
#    every output element — and every mistake in any of them — contributes;
# 3. perturbs each input element in turn by +-1e-6 and compares the central difference with the
#    analytic gradient, within atol + rtol * |numerical|.
#
# It costs two forward passes per input ELEMENT, so it is for small inputs: a unit test, not a
# training run. Here it checks a small composition of library ops.

# %%
from tinymix import backend, gradcheck
from tinymix import functional as F

backend.manual_seed(0)
inputs = Tensor(backend.host_normal((3, 5), 1.0), requires_grad=True)
weight = Tensor(backend.host_normal((4, 5), 0.5), requires_grad=True)
gain = Tensor(backend.host_normal((4,), 1.0), requires_grad=True)


def block(inputs, weight, gain):
    return F.gelu(F.layer_norm(F.linear(inputs, weight), gain, None))


assert gradcheck(block, inputs, weight, gain)
print("linear -> layer norm -> GELU: every one of", inputs.size + weight.size + gain.size,
      "partial derivatives matches central differences")

# %% [markdown]
# ## Catching a wrong backward
#
# Every op in the library is written the same way: compute the output array, define `backward(g)`
# that accumulates the input's gradient, and hand both to `Tensor._make`. Here is softplus,
# log(1 + exp(x)), whose derivative is the sigmoid 1 / (1 + exp(-x)) — once right, and once with a
# classic slip (exp(x) where exp(-x) belongs). The wrong one trains "fine" on many inputs; gradcheck
# names the first element where it is off, with both numbers.

# %%
def softplus(x, correct=True):
    out = xp.log1p(xp.exp(x.data))

    def backward(g):
        sigmoid = 1.0 / (1.0 + xp.exp(-x.data if correct else x.data))
        x._accumulate(g * sigmoid)
    return Tensor._make(out, (x,), backward)


z = Tensor(backend.host_normal((2, 3), 1.0), requires_grad=True)
assert gradcheck(softplus, z)
try:
    gradcheck(lambda t: softplus(t, correct=False), z)
except AssertionError as error:
    message = str(error)
    print("gradcheck caught it:", message)
else:
    raise AssertionError("gradcheck missed a wrong backward")
assert "index" in message and "analytic" in message and "numerical" in message

# %% [markdown]
# ## Exercises
#
# Put your answer where the `...` is and run the cell; `check` says right, or not right with a hint
# (`python3 lessons/run.py 02 --exercises` runs only these cells).
#
# 02.1 — The forward difference's error is about e |f''| / 2 (truncation) plus u |f| / e (rounding).
# Predict, from that model alone, the step e at which the FORWARD difference in float64 is most
# accurate for the f above (|f| and |f''| are of order 1 there; u = 1.1e-16). The check measures the
# best step as the figure did and accepts an answer within a factor of 10.

# %% exercise 02.1
from exercises import check

best_forward_step = ...          # a number such as 1e-3
check("02.1", best_forward_step)

# %% [markdown]
# 02.2 — Write cube(x) = x^3 as ONE fused op, the way softplus is written above: compute the output
# array, define backward(g) that accumulates the input's gradient, and return Tensor._make(...).
# The check runs gradcheck on it and makes sure it is a single graph node, not x * x * x.

# %% exercise 02.2
from exercises import check
from tinymix import Tensor


def cube(x):
    raise NotImplementedError("exercise 02.2")   # out = ...; def backward(g): ...; return Tensor._make(...)


check("02.2", cube)

# %% [markdown]
# In the library: `tinymix/gradient_check.py` — `gradcheck(fn, *inputs)`; tests/test_functional.py runs
# it over every fused op (lessons 03 and 04 derive their backward functions), and
# tests/test_tensor.py over every primitive.
#
# After lessons 01-02, do assignment A1 (autograd primitives and broadcasting gradients, graded
# against the library and finite differences):
# `python3 -m tinymix.grade lessons/assignments/a1_autograd.py`.
