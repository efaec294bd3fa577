"""Optimizers against hand-written float64 references, plus the invariants training relies on:
frozen weights never change, float32 stays float32, a checkpoint resumes exactly.
Backend-neutral: `TINYMIX_BACKEND=cupy python3 -m pytest tests/test_optim.py` runs them on a GPU."""
import json
import math

import numpy as np
import pytest

from tinymix import Tensor, backend
from tinymix.optim import (SGD, AdamW, LRScheduler, clip_grad_norm, cosine_warmup_decay,
                           linear_warmup_decay)

pytestmark = pytest.mark.numerics

STEPS = 8


def make_param(shape, seed, requires_grad=True):
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return Tensor(values, requires_grad=requires_grad)


def host(array):
    return backend.to_numpy(array)


def gradient_sequence(shape, seed, steps=STEPS):
    """float32 gradients, one per step (the references see the same values in float64)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)]


# ---- references: the textbook update formulas in float64 ------------------------------------------

def reference_adamw(p, grads, lrs, beta1, beta2, eps, weight_decay, lazy=True):
    """`grads` may hold None (no gradient that step). Before the first gradient that step skips the
    parameter; after it, lazy skips it too (t does not advance), dense steps with a zero gradient,
    as PyTorch 1.x did, whose zero_grad() kept zero-filled gradients."""
    p = p.astype(np.float64)
    m, v, t = np.zeros_like(p), np.zeros_like(p), 0
    for g, lr in zip(grads, lrs):
        if g is None and (lazy or t == 0):
            continue
        if g is None:
            g = np.zeros_like(p)
        g, t = g.astype(np.float64), t + 1
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * weight_decay * p
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def reference_sgd(p, grads, lr, momentum, weight_decay):
    p = p.astype(np.float64)
    velocity = None
    for g in grads:
        g = g.astype(np.float64) + weight_decay * p
        velocity = g if velocity is None else momentum * velocity + g
        p = p - lr * velocity
    return p


@pytest.mark.parametrize("lazy", [False, True])
def test_adamw_matches_reference_with_weight_decay_and_changing_lr(lazy):
    w, b = make_param((4, 3), 0), make_param((3,), 1)
    w0, b0 = host(w.data).copy(), host(b.data).copy()
    w_grads, b_grads = gradient_sequence((4, 3), 2), gradient_sequence((3,), 3)
    # like an expert: not routed at the first step, then routed on two steps in three
    b_grads = [g if i % 3 != 1 and i > 0 else None for i, g in enumerate(b_grads)]
    lrs = [0.01 * (1 + i) / STEPS for i in range(STEPS)]
    optimizer = AdamW([w, b], lr=lrs[0], betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, lazy=lazy)
    for step in range(STEPS):
        optimizer.lr = lrs[step]
        w.grad = backend.from_numpy(w_grads[step])
        b.grad = None if b_grads[step] is None else backend.from_numpy(b_grads[step])
        optimizer.step()
        optimizer.zero_grad()
    np.testing.assert_allclose(host(w.data), reference_adamw(w0, w_grads, lrs, 0.8, 0.95, 1e-6, 0.1),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(host(b.data), reference_adamw(b0, b_grads, lrs, 0.8, 0.95, 1e-6, 0.1, lazy),
                               rtol=1e-5, atol=1e-6)
    routed = sum(g is not None for g in b_grads)
    first = next(i for i, g in enumerate(b_grads) if g is not None)
    assert optimizer.state["1"]["step"] == (routed if lazy else STEPS - first)   # dense: every step from the first


def test_dense_and_lazy_updates_differ_only_after_an_unrouted_step():
    """Dense moves a once-routed parameter on a step without a gradient (momentum and weight decay);
    lazy leaves it exactly where it was; neither touches a parameter that never had a gradient."""
    moved = {}
    for lazy in (False, True):
        p, never = make_param((3,), 7), make_param((2,), 8)
        optimizer = AdamW([p, never], lr=0.1, weight_decay=0.1, lazy=lazy)
        p.grad = backend.from_numpy(np.ones(3, np.float32))
        optimizer.step()
        optimizer.zero_grad()
        before, never_before = host(p.data).copy(), host(never.data).copy()
        optimizer.step()                                     # no gradient for anyone
        moved[lazy] = np.abs(host(p.data) - before).max()
        np.testing.assert_array_equal(host(never.data), never_before)
    assert moved[True] == 0.0 and moved[False] > 1e-3


def test_adamw_weight_decay_is_decoupled():
    """With a zero gradient Adam's step is 0, so only the decay acts: p * (1 - lr wd), exactly as
    asked, however small the moments. (L2 decay through Adam would move p by about lr instead.)"""
    p = make_param((5,), 4)
    p0 = host(p.data).copy()
    optimizer = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = backend.from_numpy(np.zeros(5, np.float32))
    optimizer.step()
    np.testing.assert_allclose(host(p.data), p0 * (1 - 0.1 * 0.5), rtol=1e-6)


def test_sgd_with_momentum_matches_reference():
    p = make_param((6,), 5)
    p0 = host(p.data).copy()
    grads = gradient_sequence((6,), 6)
    optimizer = SGD([p], lr=0.05, momentum=0.9, weight_decay=0.01)
    for g in grads:
        p.grad = backend.from_numpy(g)
        optimizer.step()
    np.testing.assert_allclose(host(p.data), reference_sgd(p0, grads, 0.05, 0.9, 0.01), rtol=1e-5, atol=1e-6)


def test_param_groups_exempt_biases_from_weight_decay():
    w, b = make_param((3, 3), 7), make_param((3,), 8)
    b0 = host(b.data).copy()
    optimizer = AdamW([{"params": [w]}, {"params": [b], "weight_decay": 0.0}], lr=0.1, weight_decay=0.5)
    w.grad = backend.from_numpy(np.zeros((3, 3), np.float32))
    b.grad = backend.from_numpy(np.zeros(3, np.float32))
    optimizer.step()
    np.testing.assert_array_equal(host(b.data), b0)
    assert optimizer.groups[0]["weight_decay"] == 0.5


@pytest.mark.parametrize("make_optimizer", [lambda ps: AdamW(ps, lr=0.1, weight_decay=0.1),
                                            lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1)])
def test_frozen_and_gradless_parameters_are_untouched_and_have_no_state(make_optimizer):
    trained, idle = make_param((4,), 9), make_param((4,), 11)
    frozen = make_param((4,), 10, requires_grad=False)
    frozen0, idle0, trained0 = host(frozen.data).copy(), host(idle.data).copy(), host(trained.data).copy()
    optimizer = make_optimizer([("trained", trained), ("frozen", frozen), ("idle", idle)])
    for g in gradient_sequence((4,), 12, steps=50):
        trained.grad = backend.from_numpy(g)
        frozen.grad = backend.from_numpy(g)  # a stray gradient must not move a frozen weight
        optimizer.step()
    assert host(frozen.data).tobytes() == frozen0.tobytes()
    assert host(idle.data).tobytes() == idle0.tobytes()
    assert not np.array_equal(host(trained.data), trained0)
    assert set(optimizer.state) == {"trained"}


@pytest.mark.parametrize("make_optimizer", [lambda ps: AdamW(ps, lr=np.float64(1e-2)),
                                            lambda ps: SGD(ps, lr=np.float64(1e-2), momentum=0.9,
                                                           weight_decay=np.float64(0.1))])
def test_float32_stays_float32(make_optimizer):
    p = make_param((3, 2), 13)
    optimizer = make_optimizer([p])
    for g in gradient_sequence((3, 2), 14, steps=3):
        p.grad = backend.from_numpy(g)
        clip_grad_norm([p], 0.5)
        optimizer.step()
    assert p.data.dtype == np.float32
    assert all(host(a).dtype == np.float32 for a in optimizer.state_dict()["arrays"].values())


# ---- schedules -------------------------------------------------------------------------------------

@pytest.mark.parametrize("schedule", [linear_warmup_decay, cosine_warmup_decay])
def test_schedule_shape(schedule):
    warmup, total = 10, 110
    values = [schedule(step, warmup, total) for step in range(total + 5)]
    assert values[0] == 0.0
    assert values[5] == pytest.approx(0.5)
    assert values[warmup] == 1.0
    assert values[60] == pytest.approx(0.5)  # half-way through the decay, for both shapes
    assert values[total] == pytest.approx(0.0, abs=1e-12) and values[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in zip(values[:warmup], values[1:warmup + 1]))
    assert all(a > b for a, b in zip(values[warmup:total], values[warmup + 1:total + 1]))
    assert all(0.0 <= v <= 1.0 for v in values)


def test_cosine_and_linear_differ_inside_the_decay():
    assert cosine_warmup_decay(35, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert linear_warmup_decay(35, 10, 110) == pytest.approx(0.75)


def test_scheduler_sets_the_optimizer_lr():
    optimizer = SGD([make_param((2,), 15)], lr=0.5)
    scheduler = LRScheduler(optimizer, lambda s: linear_warmup_decay(s, 4, 8))
    seen = [optimizer.lr]
    for _ in range(8):
        scheduler.step()
        seen.append(optimizer.lr)
    assert seen == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.375, 0.25, 0.125, 0.0])


# ---- gradient clipping -----------------------------------------------------------------------------

def clipping_setup(scale):
    a, b, frozen = make_param((3, 4), 16), make_param((5,), 17), make_param((2,), 18, requires_grad=False)
    ga, gb = gradient_sequence((3, 4), 19, 1)[0] * scale, gradient_sequence((5,), 20, 1)[0] * scale
    a.grad, b.grad = backend.from_numpy(ga), backend.from_numpy(gb)
    frozen.grad = backend.from_numpy(np.full(2, 100.0, np.float32))  # frozen: not part of the norm
    expected = float(np.sqrt((ga.astype(np.float64) ** 2).sum() + (gb.astype(np.float64) ** 2).sum()))
    return a, b, frozen, expected


def test_clip_grad_norm_scales_to_max_norm_without_mutating_the_arrays():
    a, b, frozen, expected = clipping_setup(scale=10.0)
    old_a, old_b = a.grad, b.grad
    copy_a, copy_b = host(old_a).copy(), host(old_b).copy()
    norm = clip_grad_norm([a, b, frozen], max_norm=1.0)
    assert isinstance(norm, float) and norm == pytest.approx(expected, rel=1e-5)
    clipped = np.sqrt(sum((host(g).astype(np.float64) ** 2).sum() for g in (a.grad, b.grad)))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(host(a.grad), copy_a / expected, rtol=1e-5)  # one scale for every grad
    np.testing.assert_array_equal(host(old_a), copy_a)
    np.testing.assert_array_equal(host(old_b), copy_b)
    assert a.grad is not old_a and a.grad.dtype == np.float32


def test_clip_grad_norm_leaves_small_gradients_alone():
    a, b, frozen, expected = clipping_setup(scale=0.01)
    copy_a, copy_b = host(a.grad).copy(), host(b.grad).copy()
    norm = clip_grad_norm([("a", a), ("b", b)], max_norm=1.0, as_float=False)
    assert backend.is_array(norm) and norm.shape == ()
    assert float(norm) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(host(a.grad), copy_a)
    np.testing.assert_array_equal(host(b.grad), copy_b)


# ---- checkpoints -----------------------------------------------------------------------------------

def through_safetensors_and_json(state):
    """What a checkpoint does: arrays to host NumPy, everything else through JSON text."""
    arrays = {key: host(value) for key, value in state["arrays"].items()}
    rest = json.loads(json.dumps({key: value for key, value in state.items() if key != "arrays"}))
    return {**rest, "arrays": arrays}


@pytest.mark.parametrize("make_optimizer", [lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
                                            lambda ps: SGD(ps, lr=0.01, momentum=0.9)])
def test_state_dict_round_trip_resumes_identically(make_optimizer):
    def model(seed):
        return {"w": make_param((3, 2), seed), "b": make_param((2,), seed + 1)}

    first, second = model(21), model(21)
    optimizer = make_optimizer(list(first.items()))
    grads = {name: gradient_sequence(p.shape, 22 + i, steps=6) for i, (name, p) in enumerate(first.items())}
    for step in range(3):
        for name, p in first.items():
            p.grad = backend.from_numpy(grads[name][step])
        optimizer.step()
    saved = optimizer.state_dict()
    for name, p in second.items():
        p.data = first[name].data.copy()
    resumed = make_optimizer(list(second.items()))
    resumed.load_state_dict(through_safetensors_and_json(saved))
    for step in range(3, 6):
        for params in (first, second):
            for name, p in params.items():
                p.grad = backend.from_numpy(grads[name][step])
        optimizer.step()
        resumed.step()
    for name in first:
        assert host(first[name].data).tobytes() == host(second[name].data).tobytes()
    # the state taken at step 3 is a snapshot, not a view that later steps keep changing
    assert any(not np.array_equal(host(saved["arrays"][k]), host(v))
               for k, v in optimizer.state_dict()["arrays"].items())


def test_loading_a_state_for_other_parameters_is_a_clear_error():
    optimizer = AdamW([("w", make_param((3, 2), 30)), ("b", make_param((2,), 31))])
    for _, p in optimizer.groups[0]["params"].items():
        p.grad = backend.from_numpy(np.ones(p.shape, np.float32))
    optimizer.step()
    saved = optimizer.state_dict()
    with pytest.raises(ValueError, match=r"shapes differ: w \(3, 2\) -> \(2, 3\)"):
        AdamW([("w", make_param((2, 3), 32)), ("b", make_param((2,), 33))]).load_state_dict(saved)
    with pytest.raises(ValueError, match=r"missing \['v'\]; unexpected \['b'\]"):
        AdamW([("w", make_param((3, 2), 34)), ("v", make_param((2,), 35))]).load_state_dict(saved)
    with pytest.raises(ValueError, match="another optimizer"):
        SGD([("w", make_param((3, 2), 36)), ("b", make_param((2,), 37))], lr=0.1).load_state_dict(saved)
    saved["arrays"]["w.exp_avg"] = np.zeros((6,), np.float32)
    untouched = AdamW([("w", make_param((3, 2), 38)), ("b", make_param((2,), 39))])
    with pytest.raises(ValueError, match=r"'w.exp_avg' has shape \(6,\)"):
        untouched.load_state_dict(saved)
    assert untouched.state == {}  # a failed load changes nothing


def test_bad_parameter_lists_are_errors():
    p = make_param((2,), 40)
    with pytest.raises(ValueError, match="no parameters"):
        AdamW([])
    with pytest.raises(ValueError, match="given twice"):
        AdamW([p, p])
    with pytest.raises(TypeError, match="not a Tensor"):
        SGD([np.zeros(2)], lr=0.1)


# ---- a tiny problem, end to end with autograd --------------------------------------------------------

@pytest.mark.parametrize("make_optimizer, steps", [(lambda ps: AdamW(ps, lr=0.05, weight_decay=0.0), 400),
                                                   (lambda ps: SGD(ps, lr=0.05, momentum=0.9), 200)])
def test_least_squares_converges(make_optimizer, steps):
    rng = np.random.default_rng(41)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    true_w, true_b = rng.standard_normal((5, 1)).astype(np.float32), np.float32(0.7)
    y = Tensor(x @ true_w + true_b)
    x = Tensor(x)
    w = Tensor(np.zeros((5, 1), np.float32), requires_grad=True)
    b = Tensor(np.zeros((1,), np.float32), requires_grad=True)
    optimizer = make_optimizer([{"params": [w]}, {"params": [b], "weight_decay": 0.0}])
    for _ in range(steps):
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        clip_grad_norm([w, b], 10.0)
        optimizer.step()
        optimizer.zero_grad()
    assert w.grad is None
    assert loss.item() < 1e-6
    np.testing.assert_allclose(host(w.data), true_w, atol=1e-3)
    np.testing.assert_allclose(host(b.data), [true_b], atol=1e-3)
