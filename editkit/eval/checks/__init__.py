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

``eval.checks: false`` switches all of them off; a check set to ``false`` is skipped. The headline verdict
over them is ``editkit.eval.checks.verdict.headline_verdict``. Use one from Python::

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
from editkit.eval.checks.separation import Separation
from editkit.eval.checks.specificity import Specificity

__all__ = ["CHECKS", "ChecksSpec", "Check", "CheckData", "CheckResult", "CheckSpec", "PHASES", "merged_copy"]

CHECKS: dict[str, Check] = {
    c.name: c
    for c in (
        Separation(),
        Probe(),
        Relearn(),
        Quantised(),
        Specificity(),
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
        return {n: getattr(self, n) for n in CHECKS if getattr(self, n) is not False}


ChecksSpec = create_model(
    "ChecksSpec",
    __base__=_ChecksBase,
    **{
        name: (
            c.spec_cls | bool,
            Field(True, description=f"{c.title}: true (defaults), false (off) or options"),
        )
        for name, c in CHECKS.items()
    },
)
