"""The method registry: ``method: {name: ...}`` in a recipe → its params class (the recipe block) and its
Method class (the fit).

As in PEFT (``register_peft_method(name, config_cls, model_cls)``) the two halves are apart: validating a
recipe imports a method's ``params`` module only, never its fit code. editkit's own methods are one line each
in ``BUILTIN_METHODS``; a method from outside editkit registers its Method class with ``register_method``.
"""

from __future__ import annotations

import difflib
import importlib

from editkit.methods.base import Method, MethodParams

#: editkit's methods, one line each: name → (its recipe block "module:Class", its Method "module:Class")
BUILTIN_METHODS: dict[str, tuple[str, str]] = {
    "erase": ("editkit.methods.erase.params:EraseParams", "editkit.methods.erase.fit:EraseMethod"),
    "heads": ("editkit.methods.heads.params:HeadsParams", "editkit.methods.heads.fit:HeadsMethod"),
    "neurons": ("editkit.methods.neurons.params:NeuronsParams", "editkit.methods.neurons.fit:NeuronsMethod"),
    "refusal": ("editkit.methods.refusal.params:RefusalParams", "editkit.methods.refusal.fit:RefusalMethod"),
    "scalpel": ("editkit.methods.scalpel.params:ScalpelParams", "editkit.methods.scalpel.fit:ScalpelMethod"),
    "sft": ("editkit.methods.sft.params:SftParams", "editkit.methods.sft.fit:SftMethod"),
}

_REGISTRY: dict[str, type[Method]] = {}  # methods registered at run time (plug-ins, the docs' example)


def register_method(cls: type[Method]) -> type[Method]:
    """Make ``cls`` available as ``method: {name: cls.name}`` in recipes (for methods outside editkit)."""
    if cls.name in BUILTIN_METHODS or (cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls):
        raise ValueError(f"method '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    return sorted({*BUILTIN_METHODS, *_REGISTRY})


def _load(path: str) -> type:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _check(name: str) -> None:
    if name not in BUILTIN_METHODS and name not in _REGISTRY:
        close = difflib.get_close_matches(name, method_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown method '{name}'{hint}; known: {', '.join(method_names())}")


def get_method(name: str) -> type[Method]:
    """The Method class (imports the method's fit code)."""
    _check(name)
    return _REGISTRY[name] if name in _REGISTRY else _load(BUILTIN_METHODS[name][1])


def method_params_class(name: str) -> type[MethodParams]:
    """The recipe block's class, without importing the method's fit code."""
    _check(name)
    return _REGISTRY[name].params_cls if name in _REGISTRY else _load(BUILTIN_METHODS[name][0])
