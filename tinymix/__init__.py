"""tinymix: AdaMix (mixture-of-adaptations) end to end, on a from-scratch NumPy/CuPy autograd."""
import os as _os
import sys as _sys

# `python -m tinymix.grade` from a class folder: -m put that folder first on sys.path, and a student's
# numpy.py there would run in the grader at the next line. This runs before anything else is imported.
_argv = _sys.orig_argv
if "-mtinymix.grade" in _argv or ("-m" in _argv and _argv[_argv.index("-m") + 1:][:1] == ["tinymix.grade"]):
    _sys.path[:] = [p for p in _sys.path if p not in ("", _os.getcwd())]
del _argv
from . import backend, functional
from .backend import manual_seed, set_backend
from .gradcheck import gradcheck
from .tensor import Tensor, concatenate, is_grad_enabled, no_grad, stack, where

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "concatenate", "stack", "where", "functional",
           "gradcheck", "manual_seed", "set_backend", "backend"]
