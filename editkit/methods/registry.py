"""The method registry: ``method: {name: ...}`` in a recipe → the Method class registered under that name."""

from __future__ import annotations

import difflib

from editkit.methods.base import Method, MethodParams

_REGISTRY: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available as ``method: {name: cls.name}`` in recipes."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown method '{name}'{hint}; known: {', '.join(method_names())}")
    return _REGISTRY[name]


def method_params_class(name: str) -> type[MethodParams]:
    return get_method(name).params_cls
