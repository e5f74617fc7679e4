"""Capability-removal methods. Each is a package ``editkit/methods/<name>/`` — ``params`` (its recipe
block), ``fit`` (its Method class), ``report`` (its card section) — and one line in
``editkit.methods.registry.BUILTIN_METHODS``. Validating a recipe imports ``params`` only.
"""

from __future__ import annotations

from editkit.methods.base import FitContext, FitResult, Method, MethodParams
from editkit.methods.registry import get_method, method_names, method_params_class, register_method

__all__ = [
    "FitContext",
    "FitResult",
    "Method",
    "MethodParams",
    "get_method",
    "method_names",
    "method_params_class",
    "register_method",
]
