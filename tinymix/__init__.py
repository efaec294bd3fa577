"""tinymix: AdaMix (mixture-of-adaptations) end to end, on a from-scratch NumPy/CuPy autograd."""
from . import backend, functional
from .backend import manual_seed, set_backend
from .gradcheck import gradcheck
from .tensor import Tensor, concatenate, is_grad_enabled, no_grad, stack, where

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "concatenate", "stack", "where", "functional",
           "gradcheck", "manual_seed", "set_backend", "backend"]
