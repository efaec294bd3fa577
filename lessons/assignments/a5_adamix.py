# %% [markdown]
# # Assignment A5 — AdaMix (10 points)
#
# Do it after lessons 10-13 (`python3 lessons/run.py 10`, `11`, `12`, `13`): they prepare every step.
#
# AdaMix (Wang et al., EMNLP 2022; docs/adamix.md) keeps M copies ("experts") of an
# adapter or LoRA projection. Training routes each forward call through ONE expert drawn at random,
# ties two passes with a symmetric-KL consistency loss, and at the end averages the experts into one
# module. You write each of those steps; the grader checks them against tinymix/adamix.py.
#
# How to work: replace each `raise NotImplementedError(...)` with your code. Keep every def line and
# docstring as they are: they are the contract the grader checks you against. Grade yourself, from
# the repository root (or from any folder after `pip install -e .` there), as often as you like
# (no server, nothing is sent anywhere):
#
#     python3 -m tinymix.grade lessons/assignments/a5_adamix.py
#     python3 -m tinymix.grade lessons/assignments/a5_adamix.py --task A5.1     # one task
#
# A task you have not started shows as "not started"; a wrong one shows which input failed, the
# expected and the actual values, and the largest difference.
#
# The grader runs your file in a process of its own, with a time limit per task. It may import
# tinymix.backend, tensor, functional and nn; tinymix.adamix and functional.symmetric_kl and kl_div
# compute these answers, so they are refused here.

# %%
from tinymix import functional as F
from tinymix.backend import xp
from tinymix.tensor import Tensor, stack


# %% [markdown]
# ## Task A5.1 — stochastic routing (2 points, docs/adamix.md section 3)
# One uniform draw per forward call, shared by the whole batch: a step costs what one module costs.
# Drawing on a host generator makes a seed give the same routes on NumPy and on CuPy.

# %%
def stochastic_route(num_experts, rng):
    """AdaMix's routing decision (docs/adamix.md section 3): the ONE expert that the whole batch goes
    through on this forward call, uniform over 0 .. num_experts - 1, drawn from the host generator
    `rng` (a numpy.random.Generator) with one rng.integers draw, as the library's Mixture draws from
    backend.host_rng: a seed then gives the library's routes, on every backend. Returns an int."""
    raise NotImplementedError(
        "Task A5.1: draw the expert index for one forward call — hint: int() of one rng.integers "
        "call with num_experts as its only argument")


# %% [markdown]
# ## Task A5.2 — averaging the experts (2 points, section 6)
# In "average" inference a mixture acts as one Linear whose weight is the mean of its experts'.
# Return it as a Tensor, so that an evaluation loss could still send gradients to every expert.

# %%
def average_experts(weights):
    """The uniform mean of M experts' weights: the one weight with which an AdaMix Mixture acts in
    "average" inference (docs/adamix.md section 6). weights: a list of M Tensors of one shape (out, in).
    Returns a Tensor (out, in) through which gradients reach every expert."""
    raise NotImplementedError(
        "Task A5.2: return the mean of the experts' weights as a Tensor — hint: "
        "tinymix.tensor.stack(weights) is (M, out, in); average over the expert axis")


# %% [markdown]
# ## Task A5.3 — the symmetric-KL consistency loss (3 points, section 4)
# KL(t || s) = sum_c t_c (log t_c - log s_c). Each direction treats its target t as a constant
# (stop-gradient), so p is pulled towards q and q towards p, and neither pulls its own target. The
# grader checks gradients as well as the value: a missing .detach() gives the right value and the
# wrong gradient.

# %%
def symmetric_kl(p_logits, q_logits):
    """AdaMix's consistency loss (docs/adamix.md section 4) between two passes' logits, Tensors (N, C):

        0.5 * [ KL(softmax(q) || softmax(p)) + KL(softmax(p) || softmax(q)) ]

    each KL summed over the classes and averaged over the N rows. In each direction the target (the
    left distribution) is a constant: no gradient flows through it. Returns a scalar Tensor."""
    raise NotImplementedError(
        "Task A5.3: compute the symmetric KL with a stop-gradient on each target — hint: KL(t || "
        "s) = mean over rows of sum_c t_c (log t_c - log s_c); tinymix.functional.log_softmax "
        "gives the logs, and .detach() makes the target side a constant")


# %% [markdown]
# ## Task A5.4 — the AdaMix objective (1 point, section 4)
# loss = CE(z1, y) + lambda * symKL(z1, z2). Pass 2 enters only through the consistency term.

# %%
def adamix_loss(logits_1, logits_2, targets, consistency_weight):
    """The AdaMix objective for one batch seen twice with independent routes (docs/adamix.md section 4):
    cross-entropy of pass 1's logits plus consistency_weight times the symmetric KL between the passes.
    Only pass 1 carries the task loss. logits_1, logits_2: Tensors (N, C); targets: (N,) integers.
    You may use tinymix.functional.cross_entropy and your symmetric_kl (Task A5.3). Returns a
    scalar Tensor."""
    raise NotImplementedError(
        "Task A5.4: add the weighted consistency term to pass 1's task loss — hint: "
        "tinymix.functional.cross_entropy on pass 1 only; the consistency term sees both passes")


# %% [markdown]
# ## Task A5.5 — merging (2 points, section 6)
# Replace a mixture by one Linear with the experts' mean weight and bias. For LoRA with a shared B
# this is exact: B mean(A_i) = mean(B A_i). For adapters it is not: a GELU sits between down and up.

# %%
def merge_experts(expert_weights, expert_biases):
    """AdaMix merging (docs/adamix.md section 6): collapse a mixture of M Linear experts into ONE Linear
    with the uniform mean of their weights and of their biases, as adamix.merge_experts does.
    expert_weights: a list of M arrays (out, in); expert_biases: a list of M arrays (out,), or None for
    experts without bias (LoRA's A and B). Returns (weight, bias): arrays, bias None without biases."""
    raise NotImplementedError(
        "Task A5.5: average the experts' weights and biases into one Linear's — hint: "
        "xp.stack(...).mean(axis=0), for the biases too unless they are None")
