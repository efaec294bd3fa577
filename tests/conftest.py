"""Run the tests on every backend, on every machine.

A test that takes the `backend_name` fixture runs twice, on "numpy" and on "cupy". The cupy run uses
real CuPy where CuPy and a GPU are usable, and otherwise the CuPy stand-in (tests/cupy_contract.py:
CuPy's contract computed with NumPy: device arrays of their own type that refuse implicit conversion
and host operands, with every device-to-host transfer counted), so CuPy's path is tested without a GPU.
TINYMIX_CUPY chooses: "auto" (the default: real CuPy if usable, else the stand-in), "emulate" (the
stand-in, even with a GPU) or "real" (real CuPy; without it the cupy cases fail).

Every other test runs on the default backend: numpy, or the one TINYMIX_BACKEND names, so

    TINYMIX_BACKEND=cupy python3 -m pytest

runs the whole suite on the cupy backend (real or stand-in as above; under the stand-in, tests that
start a separate Python process run it on numpy, which cannot see the stand-in). Each test starts from
the default backend and seed 0.

TINYMIX_TESTS_OFFLINE=1 reports a test that fails only for want of a pinned asset (neither cached nor
downloadable) as skipped, naming the asset: for machines without a network, such as a GPU machine.
"""
import os
import re
import signal

import pytest

# A suite started in the background by a shell (`pytest &`, nohup, some CI runners) inherits Ctrl-C
# as IGNORED, and so would every process a test starts: the tests that press Ctrl-C on the lesson
# runner or the grader would see it ignored. Ctrl-C handled as Python does by default in the suite
# means SIGINT is at its default again in every child.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

CUPY_MODE = os.environ.get("TINYMIX_CUPY", "auto") or "auto"
if CUPY_MODE not in ("auto", "emulate", "real"):
    raise pytest.UsageError(f"TINYMIX_CUPY={CUPY_MODE!r}: choose auto, emulate or real")


def _real_cupy_problem():
    """None if real CuPy and a GPU are usable here, else what is missing."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    try:
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
        return "no GPU is visible"
    except Exception as error:  # no driver, or a broken one: CuPy says why
        return f"CUDA reports: {error}"


REAL_CUPY_PROBLEM = _real_cupy_problem() if CUPY_MODE != "emulate" else "TINYMIX_CUPY=emulate"
EMULATE = CUPY_MODE != "real" and REAL_CUPY_PROBLEM is not None
DEFAULT_BACKEND = os.environ.get("TINYMIX_BACKEND", "numpy") or "numpy"

import cupy_standin  # noqa: E402  (tests/ is on sys.path: pytest puts it there)
from cupy_contract import LEDGER  # noqa: E402

if EMULATE and DEFAULT_BACKEND == "cupy":      # the whole suite on the stand-in
    cupy_standin.install()
    os.environ["TINYMIX_BACKEND"] = "numpy"   # child processes cannot see the stand-in

from tinymix import backend  # noqa: E402  (after the stand-in, which the backend's first switch may need)


@pytest.fixture(autouse=True)
def default_backend():
    """Every test starts on the default backend with seed 0, and leaves it that way."""
    backend.manual_seed(0)
    backend.set_backend(DEFAULT_BACKEND)
    LEDGER.reset()
    yield DEFAULT_BACKEND
    backend.manual_seed(0)
    backend.set_backend(DEFAULT_BACKEND)


@pytest.fixture(params=backend.BACKENDS)
def backend_name(request, default_backend):
    """The backend this run of the test uses: numpy, or cupy (real, or the stand-in; see above)."""
    if request.param == "cupy" and EMULATE:
        try:
            with cupy_standin.installed():
                backend.set_backend("cupy")
                yield "cupy"
        finally:
            backend.set_backend(DEFAULT_BACKEND)   # after the real modules (if any) are back
        return
    if request.param == "cupy" and CUPY_MODE == "real" and REAL_CUPY_PROBLEM:
        pytest.fail(f"TINYMIX_CUPY=real, but real CuPy cannot run here: {REAL_CUPY_PROBLEM}")
    backend.set_backend(request.param)
    yield request.param


@pytest.fixture
def emulated_cupy():
    """The cupy backend on the CuPy stand-in, whatever the machine has, and its ledger (reset): for
    tests that count transfers, which only the stand-in can."""
    try:
        with cupy_standin.installed():
            backend.set_backend("cupy")
            LEDGER.reset()
            yield LEDGER
    finally:
        backend.set_backend(DEFAULT_BACKEND)      # after the real modules (if any) are back


OFFLINE = os.environ.get("TINYMIX_TESTS_OFFLINE", "") not in ("", "0")
_NO_ASSET = re.compile(r"could not download asset '([\w-]+)'")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With TINYMIX_TESTS_OFFLINE=1 (a machine that cannot download, such as a GPU machine without a
    network), a test that failed only because a pinned asset is neither cached nor downloadable is
    reported as skipped, naming the asset, so that the real failures stand out."""
    outcome = yield
    report = outcome.get_result()
    missing = _NO_ASSET.search(report.longreprtext) if OFFLINE and report.failed else None
    if missing:
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0,
                           f"Skipped: needs asset {missing.group(1)!r}, not cached here and not downloadable")


def pytest_report_header(config):
    if EMULATE:
        return f"cupy cases: the CuPy stand-in (CuPy's contract on NumPy), because {REAL_CUPY_PROBLEM}"
    return "cupy cases: real CuPy on a GPU"


def pytest_terminal_summary(terminalreporter):
    """Which CuPy the cupy cases ran on; then one line per distinct skip reason (how many, and why),
    without listing each skipped test (`pytest -rs` lists them all)."""
    terminalreporter.write_line(pytest_report_header(None))
    reasons = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, count in sorted(reasons.items()):
        terminalreporter.write_line(f"{count} skipped: {reason.removeprefix('Skipped: ')}")
