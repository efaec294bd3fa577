"""Run the tests on every backend that is available here.

A test that takes the `backend_name` fixture runs twice, on "numpy" and on "cupy"; the cupy run is
skipped, with the reason (see it with `pytest -rs`), where CuPy or a GPU is missing. Every other test
runs on the default backend: numpy, or the one TINYMIX_BACKEND names, so

    TINYMIX_BACKEND=cupy python -m pytest

runs the whole suite on the GPU. Each test starts from the default backend and seed 0.
"""
import os

import pytest

from tinymix import backend

DEFAULT_BACKEND = os.environ.get("TINYMIX_BACKEND", "numpy") or "numpy"


@pytest.fixture(autouse=True)
def default_backend():
    """Every test starts on the default backend with seed 0, and leaves it that way."""
    backend.manual_seed(0)
    backend.set_backend(DEFAULT_BACKEND)
    yield DEFAULT_BACKEND
    backend.manual_seed(0)
    backend.set_backend(DEFAULT_BACKEND)


@pytest.fixture(params=backend.BACKENDS)
def backend_name(request, default_backend):
    """The backend this run of the test uses; cupy is skipped visibly where it cannot run."""
    try:
        backend.set_backend(request.param)
    except RuntimeError as error:  # set_backend says what is missing (CuPy, or a GPU) in its first sentence
        pytest.skip(f"{request.param} backend unavailable: {str(error).split('. ')[0]}")
    return request.param


def pytest_terminal_summary(terminalreporter):
    """One line per distinct skip reason (how many, and why), so a run without a GPU says plainly
    that its CuPy cases did not run, without listing each of them (`pytest -rs` lists them all)."""
    reasons = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        terminalreporter.write_line(f"{count} skipped: {reason.removeprefix('Skipped: ')}")
