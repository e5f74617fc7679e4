"""How a method's run reads in the ablation card: the method's part of the card, from a typed info model.

``editkit.publish.card`` is a generic template; everything it says that depends on the method comes from the
method's :class:`Report` (``Method.report``): what the run removes when the recipe names no target, the
method's own metrics and the data sets they are measured on, the "where it was found" section and its
plots, and how a comparison fitted beside the edit is described. The report reads ``edit.info`` through
the method's pydantic :attr:`Report.info_model`, so a renamed info key fails in the method's tests, not
silently in a card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Info(BaseModel):
    """``edit.info`` as a report reads it. Method info models add the fields their report uses; other keys
    are kept (``extra='allow'``) and listed in the card's "other facts" table."""

    model_config = ConfigDict(extra="allow")


# ------------------------------------------------------------------------------------------------------
# number formatting shared by the card and the reports (one format, so tests compare strings)
# ------------------------------------------------------------------------------------------------------


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def num(v: Any) -> str:
    """One fixed format for every number in the body (tests compare strings made the same way)."""
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return "–"
    if v == 0:
        return "0"
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a >= 1000:
        return f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.4f}"
    return f"{v:.2e}"


def escape_cell(text: str) -> str:
    """A '|' inside a markdown table cell must be escaped or it splits the cell."""
    return text.replace("|", "\\|")


def cell(v: Any, limit: int = 120) -> str:
    """A value as one Markdown table cell: compact JSON for containers, pipes escaped, long values cut."""
    if isinstance(v, (list, tuple, dict)):
        s = json.dumps(v, ensure_ascii=False, separators=(", ", ": "))
    elif isinstance(v, float):
        s = repr(v)
    else:
        s = "null" if v is None else str(v)
    s = " ".join(s.split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return "`" + s.replace("|", "\\|").replace("`", "'") + "`"


# ------------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------------


class Report:
    """The generic report (also used for a method this installation does not know): no section of its own."""

    #: what the run removes when the recipe names no target set (None: the recipe's name)
    subject: ClassVar[str | None] = None
    #: the method installs a behaviour instead of removing one (the card says "with", not "without")
    installs: ClassVar[bool] = False
    #: the method's own metrics: key -> (label, model-index metric type, how to read it)
    metrics: ClassVar[dict[str, tuple[str, str, str]]] = {}
    #: metric key -> (what it is measured on, the method parameters that may name that ``data.sets`` entry:
    #: the first one the recipe sets wins), for the card's model-index
    metric_sets: ClassVar[dict[str, tuple[str, tuple[str, ...]]]] = {}
    #: metric key -> the sentence of "What was removed" (``{base}``, ``{edited}`` filled in)
    headline: ClassVar[dict[str, str]] = {}
    #: plot kind -> the card's alt text, in the order the images appear under the section
    plot_alt: ClassVar[dict[str, str]] = {}
    info_model: ClassVar[type[Info]] = Info

    def __init__(self, info: Mapping[str, Any] | None):
        self.raw = dict(info or {})
        self.info = self.info_model.model_validate(self.raw)

    def where(self) -> list[str]:
        """Lines of the "Where the capability was found" section (before the generic ‖ΔW‖ table)."""
        return []

    def shown(self) -> set[str]:
        """``edit.info`` keys :meth:`where` already shows (left out of the "other facts" table)."""
        return set()

    def plots(self, out: Path, run_dir: Path) -> dict[str, str]:
        """Draw the method's plots into ``out`` (the card's plot folder); kind (of :attr:`plot_alt`) -> file
        name."""
        return {}

    def removal_verdict(self, base: Mapping[str, Any], edited: Mapping[str, Any]) -> dict[str, Any] | None:
        """The method's own rule for saying *removed*, for runs the pairwise rules cannot judge (no target
        accuracy: refusal): ``{"removed", "status" (removed / weakened / not_removed), "sentence"}`` from the
        base and edited phases' metrics; None: no rule of its own."""
        return None

    def run_files(self, run_dir: Path) -> dict[str, Any]:
        """What the method's card sections need beyond metrics.json, read from its run directory (merged
        into the metrics the card renders); {}: nothing."""
        return {}

    def sections(self, metrics: Mapping[str, Any]) -> list[str]:
        """The method's own card sections after the generations (from ``metrics`` and :meth:`run_files`)."""
        return []

    def comparison_note(self, comparison: Mapping[str, Any]) -> str:
        """How an alternative edit fitted in the same run was made (the card's "Compared with" table)."""
        return "Fitted in the same run and evaluated on the same prompts; it was not exported."
