"""What every method is: typed params in, a :class:`FitResult` (an :class:`~editkit.edit.edit.Edit` and what
came with it) out. A method keeps no state between calls: everything a later stage needs is in the result."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from editkit.edit.edit import Edit
from editkit.methods.report import Report
from editkit.model.anatomy import Anatomy
from editkit.run.events import EventLog


class MethodParams(BaseModel):
    """Base of every method's parameter class (``method:`` block of a recipe)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)
    name: str


@dataclass
class FitResult:
    """What ``Method.fit`` returns: the edit, and everything the later stages need from the fit."""

    edit: Edit
    #: alternative edits fitted alongside (e.g. plain abliteration beside SRA), by name; each is evaluated
    #: like the edit and reported in the card, never exported
    comparisons: dict[str, Edit] = field(default_factory=dict)
    #: a PEFT adapter folder the method saved (``export.adapter: true``); copied into the export
    adapter_dir: Path | None = None

    @property
    def info(self) -> dict[str, Any]:
        return self.edit.info


@dataclass
class FitContext:
    """Everything a method may use while fitting. Data are loaded before the run directory exists."""

    model: Any
    tokenizer: Any
    anatomy: Anatomy
    params: MethodParams
    data: dict[
        str, Any
    ]  # role -> datasets.Dataset / list ("target_train", "target_test", "general_train", ...)
    events: EventLog
    run_dir: Path
    seed: int = 0
    resume: bool = False
    #: False on the helper processes of an ``accelerate launch``: they compute, only the main process writes
    is_main: bool = True
    #: where the model was loaded from (Hub id or folder): a key for caches of the base model's outputs
    model_path: str = ""
    #: the recipe asks for the PEFT adapter too (``export.adapter``): LoRA methods save it under run_dir
    save_adapter: bool = False
    #: what the ``base`` evaluation phase measured that later phases compare with (e.g. the base model's
    #: first-token distribution); filled in phase ``base`` only, so the call order is the pipeline's
    baseline: dict[str, Any] = field(default_factory=dict)
    #: ``eval.refusal_judge`` ('markers', 'self' or a chat model) and the recipe's model spec ('self' loads
    #: it again as the judge); the loaded judge is kept in ``judges`` for the run
    refusal_judge: str = "markers"
    model_spec: Any = None
    judges: dict[str, Any] = field(default_factory=dict)
    #: while ``Method.evaluate`` runs inside a pipeline stage: counts units of its work done (adding up to
    #: ``Method.evaluation_units``), so the stage's progress bar has a total and an ETA; None elsewhere
    on_units: Callable[[int], None] | None = None
    #: ``eval.cache``: the ``base`` phase may take what an earlier run with the same weights and settings
    #: measured (editkit.eval.refusal.base_cache); off for a FitContext made by hand
    base_eval_cache: bool = False
    #: False while the pipeline evaluates an edit no rule can pick (a comparison fitted beside the edit,
    #: ``eval.comparison_generations`` off): methods skip their generation-based metrics
    eval_generations: bool = True

    def count(self, k: int) -> None:
        """``k`` units of ``Method.evaluate``'s work done (no-op outside a pipeline stage)."""
        if self.on_units is not None and k:
            self.on_units(k)

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")


class Method:
    """A capability-removal method. Subclasses set ``name``, ``params_cls``, ``paper`` and implement fit."""

    name: ClassVar[str]
    params_cls: ClassVar[type[MethodParams]]
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: what the method does on a mixture-of-experts model (docs/methods.md)
    moe: ClassVar[str] = ""
    #: data roles the method needs in the recipe (checked before the model is loaded)
    needs: ClassVar[tuple[str, ...]] = ()
    #: how a run of this method reads in the card (its info model, sections, plots, metrics)
    report: ClassVar[type[Report]] = Report
    #: the fit trains a PEFT adapter it can save (``export.adapter: true`` is allowed)
    makes_adapter: ClassVar[bool] = False

    def check(self, params: MethodParams, anatomy: Anatomy) -> None:
        """Model-dependent validation of the params, run before the run directory exists.

        Every parameter that can be checked against the model's anatomy (layer and head indices, module
        roles, tied embeddings) is checked here, so no evaluation runs before a mistake is reported. Raise
        an EditkitError naming the field (e.g. ``method.layer: 99 is out of range 0..29``).
        """

    def notes(self, params: MethodParams, anatomy: Anatomy) -> list[str]:
        """One-line notes shown once ``check`` passes: what the method will leave out on this model (e.g. a
        mixture of experts' fused expert tensors). Nothing is refused here."""
        return []

    def check_data(self, params: MethodParams, sets: set[str]) -> None:
        """Check the ``data.sets`` names the params refer to (``sets``: the recipe's set names), before any
        model is loaded. Raise an EditkitError naming the field."""

    def fit(self, ctx: FitContext) -> FitResult:
        raise NotImplementedError

    def evaluate(self, ctx: FitContext, phase: str) -> dict[str, float]:
        """Method-specific metrics, measured with the model as it is now (phase: base/edited/control)."""
        return {}

    def evaluation_units(self, ctx: FitContext) -> int:
        """Units of work ``evaluate`` reports through ``ctx.count`` (generated prompts, judged responses,
        ...): the pipeline adds them to the stage's progress total. 0: evaluate reports nothing."""
        return 0

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """A random edit of the same size as ``edit`` (the honest baseline); None if not meaningful."""
        return None
