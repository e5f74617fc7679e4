"""Removal checks: the tests the unlearning literature uses to tell a removed capability from a hidden one.

Each check is one module with a typed recipe block, a per-phase ``run`` and a judge (``base.Check``); this
registry lists them, one line each, and the recipe block ``eval.checks`` is built from it:

    eval:
      checks:
        separation: true
        probe: true                   # or {labels: class, C: 0.1, layer_stride: 1}
        relearn: {examples: 16, steps: 20, lr: 2.0e-4, rank: 8}
        quantised: true               # or {types: [q8_0, q4_0]}
        specificity: true             # or {per_capability: 24}
        robustness: true              # or {families: [stored, answer_words], min_headroom: 0.05}

``eval.checks: false`` switches all of them off; a check set to ``false`` is skipped. The headline verdict
over them is ``editkit.eval.checks.verdict.headline_verdict``. A check from outside editkit is added with
:func:`register_check` (docs/adding_an_evaluation.md): its block then validates in recipes, it runs, and its
section is in the card. Use one from Python::

    from editkit.eval.checks import CHECKS, CheckData
    data = CheckData(tokenizer, target_test, target_train, heldout, seed=0)
    check = CHECKS["probe"]
    result = check.run("base", model, data, check.spec_cls())       # a typed result (.to_dict())
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from editkit.eval.checks.base import PHASES, Check, CheckData, CheckResult, CheckSpec, merged_copy
from editkit.eval.checks.probe import Probe
from editkit.eval.checks.quantised import Quantised
from editkit.eval.checks.relearn import Relearn
from editkit.eval.checks.robustness import Robustness
from editkit.eval.checks.separation import Separation
from editkit.eval.checks.specificity import Specificity

__all__ = [
    "CHECKS",
    "ChecksSpec",
    "Check",
    "CheckData",
    "CheckResult",
    "CheckSpec",
    "PHASES",
    "checks_spec",
    "lift_legacy_fields",
    "merged_copy",
    "register_check",
    "unregister_check",
]

CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Separation(),
        Probe(),
        Relearn(),
        Quantised(),
        Specificity(),
        Robustness(),
    )
}


class _ChecksBase(BaseModel):
    """``eval.checks``: each check true (its defaults), false (skipped) or its options."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="after")
    @classmethod
    def _defaults(cls, v: Any, info) -> Any:
        if v is True:  # resolved: the recipe (and its hash) records every number the check ran with
            return CHECKS[info.field_name].spec_cls()
        return v

    def enabled(self) -> dict[str, CheckSpec]:
        """The checks to run, in registry order: name → options."""
        return {n: getattr(self, n) for n in CHECKS if getattr(self, n, False) is not False}


def _fields(checks) -> dict[str, Any]:
    return {
        c.name: (
            c.spec_cls | bool,
            Field(True, description=f"{c.title}: true (defaults), false (off) or options"),
        )
        for c in checks
    }


ChecksSpec = create_model("ChecksSpec", __base__=_ChecksBase, **_fields(CHECKS.values()))
"""``eval.checks`` with editkit's own checks (the schema the reference docs show)."""
_BUILTIN = tuple(CHECKS)
_current: type[BaseModel] = ChecksSpec


def checks_spec() -> type[BaseModel]:
    """The ``eval.checks`` model for the checks registered now (a subclass of :data:`ChecksSpec` once a
    plug-in is registered); recipes validate their block against it."""
    return _current


def _rebuild() -> None:
    global _current
    extra = [c for n, c in CHECKS.items() if n not in _BUILTIN]
    _current = create_model("ChecksSpec", __base__=ChecksSpec, **_fields(extra)) if extra else ChecksSpec


def register_check(check: Check) -> Check:
    """Add a check from outside editkit: one more ``eval.checks.<name>`` block (on by default, like the
    others), run on every phase it names, judged and rendered in the card after editkit's own. The headline
    verdict stays the rule over editkit's checks (docs/checks.md)."""
    if not getattr(check, "name", "").isidentifier():
        raise ValueError(
            f"a check needs a name that is a Python identifier, got {getattr(check, 'name', None)!r}"
        )
    if check.name in CHECKS:
        raise ValueError(f"a check named {check.name!r} is already registered")
    if not (isinstance(check.spec_cls, type) and issubclass(check.spec_cls, CheckSpec)):
        raise TypeError(f"check {check.name!r}: spec_cls must subclass editkit.eval.checks.CheckSpec")
    CHECKS[check.name] = check
    _rebuild()
    return check


def unregister_check(name: str) -> None:
    """Remove a check added by :func:`register_check` (editkit's own stay)."""
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is one of editkit's own checks")
    CHECKS.pop(name, None)
    _rebuild()


def lift_legacy_fields(ev: dict) -> dict:
    """An ``eval:`` block with the fields of a check that was once a stage of its own (``Check.legacy_fields``:
    ``eval.robustness_families`` ...) rewritten into ``eval.checks.<name>``, so recipes and stored runs
    written before still load and mean what they meant; given both ways, a ``ValueError`` naming both."""
    found = {c.name: {f: ev[f] for f in c.legacy_fields if f in ev} for c in CHECKS.values()}
    found = {n: fields for n, fields in found.items() if fields}
    if not found:
        return ev
    ev = {k: v for k, v in ev.items() if not any(k in f for f in found.values())}
    checks = ev.get("checks", True)
    block = (
        {n: False for n in CHECKS} if checks is False else dict(checks) if isinstance(checks, dict) else {}
    )
    given = set(checks) if isinstance(checks, dict) else set()
    for name, fields in found.items():
        if name in given:
            raise ValueError(f"give eval.{next(iter(fields))} or eval.checks.{name}, not both")
        legacy = CHECKS[name].legacy_fields
        switch = next((v for f, v in fields.items() if legacy[f] is None), None)
        options = {legacy[f]: v for f, v in fields.items() if legacy[f] is not None}
        if switch is False:
            block[name] = False
        elif options:
            block[name] = options
        elif switch is True and checks is False:
            block[name] = True
    if block or checks is False:
        ev["checks"] = block
    return ev
