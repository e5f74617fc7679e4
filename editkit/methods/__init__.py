"""Capability-removal methods. Each is a package ``editkit/methods/<name>/`` (params, fit, report) whose
Method class carries ``@register_method``; adding a method = that package + one line below.
"""

from __future__ import annotations

# the registry: one line per method package (importing it registers its Method class)
from editkit.methods import (  # noqa: E402,F401
    heads,
    neurons,
    refusal,
    scalpel,
    sft,
)
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
