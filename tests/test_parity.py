"""tinymix/bench/parity.py, the GPU's first check, rehearsed on the CuPy stand-in: it runs, agrees with
itself, and its comparison notices a different route, loss or gradient."""
import copy

import pytest

import cupy_standin
from tinymix import backend
from tinymix.bench import parity
from tinymix.transformer import TransformerConfig

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
