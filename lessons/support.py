"""What every lesson shares: the repository on sys.path, the fast-mode switch, and where figures go.

    from support import FAST, budget, figure_path

FAST is True when the environment variable TINYMIX_FAST is 1: budgets shrink so that CI can run every
lesson in seconds (the asserts stay the same; only sizes and step counts change). NumPy's BLAS runs
one thread unless OPENBLAS_NUM_THREADS says otherwise (see below). Figures are PNG
files in lessons/figures/ (lessons/figures/fast/ in fast mode, so a fast run never overwrites the
full run's figures; git ignores both), or in the folder TINYMIX_LESSON_FIGURES names; without a
display matplotlib draws off-screen. In a Jupyter notebook each saved figure is also shown inline.
"""
import os
import sys

from cells import LESSONS  # noqa: E402
from pathlib import Path

ROOT = LESSONS.parent
if str(ROOT) not in sys.path:   # `python3 lessons/07_....py` works without installing tinymix
    sys.path.insert(0, str(ROOT))

FAST = os.environ.get("TINYMIX_FAST", "") not in ("", "0")

# One BLAS thread unless the reader says otherwise (this must happen before NumPy is imported). The
# lessons' matrices are small, and on a 2-core machine that other jobs keep busy a second BLAS thread
# that waits for a core made them 1.5-3x SLOWER (lesson 12, full mode: 58 s against 137 s). On an
# idle machine OPENBLAS_NUM_THREADS=2 may win for the MiniLM lessons: set it and compare.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

if not os.environ.get("MPLBACKEND") and sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ["MPLBACKEND"] = "Agg"   # headless: matplotlib reads this when it is imported


def budget(full, fast):
    """`fast` under TINYMIX_FAST=1, else `full`: the only place a lesson's size depends on the mode."""
    return fast if FAST else full


def figure_path(name):
    """Where a lesson saves its figure `name` (a .png file name); the folder is made if missing."""
    folder = Path(os.environ.get("TINYMIX_LESSON_FIGURES") or LESSONS / "figures" / ("fast" if FAST else ""))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def show(path):
    """Show a saved figure inline when the lesson runs in a Jupyter notebook (elsewhere: nothing)."""
    if "ipykernel" in sys.modules:
        from IPython.display import Image, display
        display(Image(filename=str(path)))


def save_figure(figure, name):
    """Save a matplotlib figure as a PNG, close it, and say where it went."""
    import matplotlib.pyplot as plt
    path = figure_path(name)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"figure saved: {path}")
    show(path)
    return path
