"""What every removal check is: a typed recipe block, work units, ``run(phase, model, data, spec)``, a judge
and a card section. The registry (``editkit.eval.checks.CHECKS``) lists them, one line each.

A check is measured on each *phase* of a run: ``base`` (the model as loaded), ``edited`` (the edit applied)
and ``control`` (a random edit of the same size). ``run`` gets the model as it is in that phase and returns
a typed result (a dataclass with ``to_dict``); ``judge`` reads the stored results of every phase and says
whether the check passes, with its numbers; ``section`` renders the stored results and judgement as Markdown
for the card. Everything ``judge`` and ``section`` read is in ``metrics.json`` (``checks.<name>``), so a
stored run can be re-judged.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from editkit.eval.pairwise import pairwise_margins
from editkit.eval.robustness.families import ANSWER_FRAME_FAMILIES, build_families
from editkit.eval.subsets import answer_classes, stratified_subset

PHASES = ("base", "edited", "control")


class CheckSpec(BaseModel):
    """Base of each check's recipe block (``eval.checks.<name>``): unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


@dataclass
class CheckResult:
    """Base of each check's per-phase result; ``to_dict`` is what metrics.json stores."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckData:
    """What the checks measure on, built once per run from the run's data.

    ``target_test``: the held-out target items (with their ``answer_frames``); ``target_train``: the fit's
    training triplets (the relearning attack draws from these, never from the test items); ``heldout``:
    the other capabilities' test items.
    """

    tokenizer: Any
    target_test: list[dict]
    target_train: list[dict] = field(default_factory=list)
    heldout: dict[str, list[dict]] = field(default_factory=dict)
    seed: int = 0
    batch_size: int = 16
    #: phase → (prompt, correct, incorrect) → signed answer margin: what a phase's model has scored already
    scored: dict[str, dict[tuple[str, str, str], float]] = field(
        default_factory=dict, repr=False, compare=False
    )
    #: what a check builds from this data once per run and reads in ``units`` and every ``run`` (the robustness
    #: check's family sets, per spec)
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def families(self) -> dict[str, list[dict]]:
        """``original`` (the frames the fit trained on) and every answer-frame family the fit never saw,
        each variant tagged with ``_item``: the index of the test item it re-asks."""
        items = [dict(t, _item=i) for i, t in enumerate(self.target_test)]
        return build_families(
            items, families=list(ANSWER_FRAME_FAMILIES), seed=self.seed, tokenizer=self.tokenizer
        )

    @cached_property
    def item_classes(self) -> list[str] | None:
        """The target's two answer classes (" bad"/" good"), when it has exactly two; else None."""
        classes = answer_classes(self.target_test)
        return classes if classes is not None and len(classes) == 2 else None

    def relearn_examples(self, n: int) -> list[dict]:
        """``n`` training triplets stratified by answer class, none sharing a prompt with a test item."""
        test_prompts = {t["prompt"] for t in self.target_test}
        pool = [t for t in self.target_train if t["prompt"] not in test_prompts]
        return stratified_subset(pool, n, self.seed)

    def margins(
        self, phase: str, model, items: Sequence[Mapping], on_units: Callable[[int], None] | None = None
    ) -> list[float]:
        """ℓ(correct) − ℓ(incorrect) of each item on ``phase``'s model (the shared one, with that phase's edit
        applied), every (prompt, correct, incorrect) scored once per phase however many checks ask: the answer
        frames the separation check scores are also paraphrase families of the robustness check. Reports two
        units per item, scored or read. Only for checks that do not change their model (``Check.mutates``)."""
        memo = self.scored.setdefault(phase, {})
        keys = [(it["prompt"], it["correct"], it["incorrect"]) for it in items]
        todo = list(dict.fromkeys(k for k in keys if k not in memo))
        if todo:
            rows = [{"prompt": p, "correct": c, "incorrect": w} for p, c, w in todo]
            with torch.no_grad():
                got = pairwise_margins(model, self.tokenizer, rows, self.batch_size, on_batch=on_units)
            memo.update(zip(todo, got.tolist(), strict=True))
        if on_units is not None and len(keys) > len(todo):
            on_units(2 * (len(keys) - len(todo)))
        return [memo[k] for k in keys]

    def rng(self, salt: str) -> random.Random:
        return random.Random(f"{self.seed}:{salt}")


class Check:
    """One removal check. Subclasses set the class attributes and implement ``run``, ``judge``, ``section``."""

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    spec_cls: ClassVar[type[CheckSpec]]
    #: the phases it runs on (a subset of PHASES)
    phases: ClassVar[tuple[str, ...]] = PHASES
    #: True when ``run`` changes the model it is given (it then gets a private copy with the edit merged)
    mutates: ClassVar[bool] = False
    #: what the card says on a capability removal that did not run it (None: nothing)
    missing_note: ClassVar[str | None] = None
    #: ``eval:`` fields of recipes written before it was a check → its option (None: the on/off switch);
    #: ``editkit.eval.checks.lift_legacy_fields`` moves them into ``eval.checks.<name>``
    legacy_fields: ClassVar[dict[str, str | None]] = {}

    def units(self, data: CheckData, spec: CheckSpec) -> int:
        """Work units one ``run`` reports through ``on_units`` (scored rows, training steps)."""
        return 0

    def run(
        self,
        phase: str,
        model,
        data: CheckData,
        spec: CheckSpec,
        *,
        on_units: Callable[[int], None] | None = None,
    ) -> CheckResult:
        raise NotImplementedError

    def judge(self, phases: Mapping[str, Mapping], spec: Mapping) -> dict[str, Any]:
        """``{"pass": True | False | None, "summary": one line, ...numbers}`` from the stored results;
        ``pass`` None: the check could not decide (the base model cannot do it, nothing was removed)."""
        raise NotImplementedError

    def section(self, stored: Mapping) -> list[str]:
        """Markdown lines for the card (``stored``: this check's ``metrics['checks'][name]``)."""
        raise NotImplementedError

    def events(self, stored: Mapping) -> list[dict[str, Any]]:
        """Payloads of ``families`` events (``capability`` and a ``families`` list of {family, n, before, after}:
        a before/after table per set) that the checks stage sends once the check is judged, for the monitor
        (default: none)."""
        return []

    def legacy(self, metrics: Mapping) -> Mapping | None:
        """Its stored form rebuilt from a run written before it was a check (default: None)."""
        return None


def merged_copy(model, edit) -> torch.nn.Module:
    """A private copy of ``model`` (which must carry no hooks) with ``edit`` merged into its weights."""
    twin = copy.deepcopy(model)
    if edit is not None:
        edit.merge_into(twin)
    twin.eval()
    return twin


def excess(auc: float | None) -> float | None:
    """Distance of an AUC from chance, |AUC − 0.5|: an inverted separation (AUC 0.2) still separates."""
    return None if auc is None else abs(float(auc) - 0.5)


def closed_share(base: float | None, after: float | None) -> float | None:
    """The share of the base model's excess over chance that ``after`` closed (1 = all of it, 0 = none)."""
    b, a = excess(base), excess(after)
    if b is None or a is None or b <= 0:
        return None
    return (b - a) / b


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def present(phases: Mapping[str, Any], order: Sequence[str] = PHASES) -> list[str]:
    return [p for p in order if p in phases]
