"""tinymix/bench/parity.py, the GPU's first check, rehearsed on the CuPy stand-in: it runs, agrees with
itself, and its comparison notices a different route, loss or gradient."""
import copy

import pytest

import cupy_standin
from tinymix import backend
from tinymix.bench import parity
from tinymix.transformer import TransformerConfig

pytestmark = pytest.mark.numerics

SMALL = TransformerConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                          max_positions=16, dropout=0.0)


def test_parity_runs_on_the_cupy_path_and_passes():
    with cupy_standin.installed():
        report = parity.run(config=SMALL, batch=4, length=12)
    assert backend.name == "numpy"
    assert report["passed"] and report["repeatable"], report["checks"]
    assert report["gradient_count"] >= 10 and not report["extra_gradients"]
    assert report["loss_difference"] <= 1e-6 and len(report["routes"][0]) == 2          # two passes
    assert "PASSED" in parity.summary(report)


def test_the_comparison_notices_each_kind_of_difference():
    reference = parity.one_step("numpy", SMALL, batch=4, length=12)
    assert parity.compare(reference, reference)["passed"]
    loss, routes, grads, seconds = reference
    name = max(grads, key=lambda n: float(abs(grads[n]).max()))          # a gradient well above zero
    nudged = {**grads, name: grads[name] + 2e-3 * abs(grads[name]).max()}
    other_routes = copy.deepcopy(routes)
    other_routes[1][0] = (other_routes[1][0] + 1) % 4
    for changed, check in [((loss + 1e-2, routes, grads, seconds), "loss"),
                           ((loss, other_routes, grads, seconds), "routes"),
                           ((loss, routes, nudged, seconds), "gradients")]:
        report = parity.compare(reference, changed)
        assert not report["passed"] and not report["checks"][check], check
        assert [k for k, v in report["checks"].items() if not v] == [check]


def _scales(grads):
    return {name: float(abs(g).max()) for name, g in grads.items()}


def test_rounding_noise_on_a_near_zero_gradient_passes():
    """An expert routed only in pass 2 gets only the consistency term's gradient, about 1e-6 of its
    sibling's at initialisation: rounding makes it differ by per cents of ITSELF on another machine or
    backend, yet by nothing at the scale of its mixture. That must pass (it failed under the old rule)."""
    loss, routes, grads, seconds = reference = parity.one_step("numpy", SMALL, batch=4, length=12)
    scales = _scales(grads)
    stacked = {}
    for name, scale in scales.items():
        stacked.setdefault(parity.tensor_of(name), []).append(scale)
    tiny = [n for n in grads if ".experts." in n and scales[n] < 1e-4 * max(stacked[parity.tensor_of(n)])]
    assert tiny, "the small model should have an expert routed only in pass 2"
    rng = backend.host_generator([7])
    noisy = {n: (g + (0.02 * scales[n] * rng.standard_normal(g.shape)).astype(g.dtype) if n in tiny else g)
             for n, g in grads.items()}
    report = parity.compare(reference, (loss, routes, noisy, seconds))
    assert report["passed"], parity.table(report)
    # and the whole model moved by float32 rounding at the scale of each tensor passes too
    jitter = {n: (g * (1 + 1e-5 * rng.standard_normal(g.shape)) + 1e-6 * scales[n] * rng.standard_normal(g.shape)
                  ).astype(g.dtype) for n, g in grads.items()}
    assert parity.compare(reference, (loss, routes, jitter, seconds))["passed"]


@pytest.mark.parametrize("kind", ["largest tensor", "smallest material tensor", "a bias that matters"])
def test_a_material_gradient_off_by_a_few_per_cent_fails(kind):
    """3% off on every element of one tensor whose gradient carries signal fails, however small the
    tensor's scale (the adapter's down-projections start near 1e-5; a bias is a few entries)."""
    loss, routes, grads, seconds = reference = parity.one_step("numpy", SMALL, batch=4, length=12)
    scales = _scales(grads)
    stacked = {}
    for name, scale in scales.items():
        stacked[parity.tensor_of(name)] = max(stacked.get(parity.tensor_of(name), 0.0), scale)
    material = [n for n in grads if scales[n] >= 0.1 * stacked[parity.tensor_of(n)]]
    name = {"largest tensor": max(material, key=lambda n: grads[n].size),
            "smallest material tensor": min(material, key=lambda n: scales[n]),
            "a bias that matters": min((n for n in material if n.endswith("bias")), key=lambda n: scales[n])}[kind]
    off = {**grads, name: grads[name] * 1.03}
    report = parity.compare(reference, (loss, routes, off, seconds))
    assert not report["passed"] and not report["gradients"][name]["passed"], (name, report["gradients"][name])
    assert [n for n, g in report["gradients"].items() if not g["passed"]] == [name]
    assert f"| {name} |" in parity.table(report) and "FAILED" in parity.table(report)


def test_without_a_gpu_the_command_says_what_is_missing(capsys):
    try:
        backend.set_backend("cupy")
    except RuntimeError as error:
        missing = str(error)
    else:
        pytest.skip("the cupy backend can be set here (real CuPy and a GPU, or the stand-in)")
    assert parity.main([]) == 2
    assert capsys.readouterr().out == f"parity needs the cupy backend: {missing}\n"
    assert backend.name == "numpy"
