"""What every method is: typed params in, an :class:`~editkit.edit.Edit` out."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from editkit.anatomy import Anatomy
    from editkit.edit import Edit
    from editkit.events import EventLog


class MethodParams(BaseModel):
    """Base of every method's parameter class (``method:`` block of a recipe)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)
    name: str


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
    extras: dict[str, Any] = field(default_factory=dict)

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")


class Method:
    """A capability-removal method. Subclasses set ``name``, ``params_cls``, ``paper`` and implement fit."""

    name: ClassVar[str]
    params_cls: ClassVar[type[MethodParams]]
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    #: data roles the method needs in the recipe (checked before the model is loaded)
    needs: ClassVar[tuple[str, ...]] = ()

    def check(self, params: MethodParams, anatomy: Anatomy) -> None:
        """Model-dependent validation of the params, run before the run directory exists.

        Raise an EditkitError naming the field (e.g. a head index beyond this model's heads).
        """

    def fit(self, ctx: FitContext) -> Edit:
        raise NotImplementedError

    def evaluate(self, ctx: FitContext, phase: str) -> dict[str, float]:
        """Method-specific metrics, measured with the model as it is now (phase: base/edited/control)."""
        return {}

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """A random edit of the same size as ``edit`` (the honest baseline); None if not meaningful."""
        return None

    def comparisons(self, ctx: FitContext, edit: Edit) -> dict[str, Edit]:
        """Alternative edits fitted alongside ``edit`` (e.g. plain abliteration next to SRA), by name; each
        is evaluated like the edit and reported in the card. Default: none."""
        return {}
