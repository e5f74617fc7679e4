"""What every part of the evaluation suite is: its recipe fields, its data, the rows it scores (for progress),
``run`` on the model as it is in one phase, and what the card and the model-index say about its metrics; and
the one piece of state a later phase needs from the base phase.

The suite (``editkit.eval.suite.evaluate``) runs the registered parts in order on the base model, the edited
model, the random control and every comparison edit; each returns flat metric names → numbers for that
phase's section of metrics.json. Nothing outside ``editkit/eval/parts/`` names a part, its metrics or its
recipe fields: the recipe schema, the data loader, the preflight, the card and ``editkit eval`` iterate over
``PARTS`` (``tests/test_code_shape.py`` greps for it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch


@dataclass
class Baseline:
    """What later phases compare with, measured on the base phase and passed explicitly to every other
    phase (the pipeline keeps it on its ``Run``): the base model's first-token distribution on the drift
    prompts."""

    first_token_logprobs: torch.Tensor | None = None


@dataclass
class SuiteOptions:
    batch_size: int
    #: the perplexity function (None: no perplexity in this evaluation)
    perplexity_fn: Callable | None = None
    #: names what is being scored now (the progress line)
    say: Callable[[str], None] = lambda _m: None


@dataclass(frozen=True)
class Datasets:
    """What a run measured on, as the model-index names it — (dataset type, dataset name) per data role —
    resolved from the recipe by the card (``editkit.publish.card_meta``), and the phase's metrics."""

    target: tuple[str, str]
    general: tuple[str, str]
    phase: Mapping[str, Any]


class SuitePart:
    """One evaluation of the suite. Subclasses set ``name`` and ``label`` and implement ``units`` and ``run``;
    the rest has defaults (no recipe fields, no data of its own, no card vocabulary)."""

    name: ClassVar[str]
    #: what the progress line says while it runs (None: the part says it itself)
    label: ClassVar[str | None]
    #: its fields of the recipe's ``eval:`` block: field name → (annotation, ``pydantic.Field(...)``); the
    #: recipe schema (``editkit.spec.eval.EvalSpec``) is built with them, so they validate with the rest
    fields: ClassVar[dict[str, tuple[Any, Any]]] = {}
    #: metric name → (card label, model-index metric type, how to read it), in the card's order
    metrics: ClassVar[dict[str, tuple[str, str, str]]] = {}
    #: a family of metrics named ``<family><member>`` (held-out capabilities, the target's answer classes)
    family: ClassVar[str | None] = None
    #: the family's (card label, model-index metric type, reading); ``{}`` in the label is the member
    family_meta: ClassVar[tuple[str, str, str]] = ("{}", "", "")
    #: how many of ``metrics`` the card lists before the family's members
    family_after: ClassVar[int] = 0
    #: the card's note when the base phase has none of its metrics (None: nothing to say)
    missing_note: ClassVar[str | None] = None
    #: its words in the card's "general ability is measured by ..." limitation (None: not general ability)
    ability: ClassVar[str | None] = None
    #: compares with the base phase (``Baseline``): left out where there is no base phase (``editkit eval``)
    needs_base: ClassVar[bool] = False
    #: the phases it runs on (None: every phase the suite runs — base, edited, control, each comparison)
    phases: ClassVar[tuple[str, ...] | None] = None
    #: True when ``run`` returns samples (text, not numbers): they go to its own top-level section of
    #: metrics.json (``metrics[name]``, folded in by ``fold``), not to the phase's numbers, and the card shows
    #: them with ``card``
    samples: ClassVar[bool] = False

    def load(self, ev: Any, general_test: list[str], seed: int, target_test: list[dict] | None = None) -> Any:
        """Its own data for ``EvalData.parts[name]`` from the validated ``eval`` block (None: none); the
        general test text and the target's test items (cut by ``eval.max_items``) are there to draw from.
        Raises ``DataError`` naming the recipe field when the data is not there."""
        return None

    def preflight(self, ev: Any) -> list[str]:
        """Problems with its recipe fields found before anything is loaded (one line each)."""
        return []

    def owns(self, key: str) -> bool:
        """Whether metric ``key`` is one of its own (``metrics``, or a member of its ``family``)."""
        return key in self.metrics or (self.family is not None and key.startswith(self.family))

    def order(self, keys: list[str]) -> list[str]:
        """Its metrics among ``keys``, in the order the card lists them: the first ``family_after`` of
        ``metrics``, the family's members sorted, then the rest of ``metrics``."""
        head = [k for k in list(self.metrics)[: self.family_after] if k in keys]
        members = sorted(k for k in keys if self.family is not None and k.startswith(self.family))
        return head + members + [k for k in self.metrics if k in keys and k not in head]

    def meta(self, key: str) -> tuple[str, str, str] | None:
        """(card label, model-index metric type, how to read it) of one of its metrics (None: not its own)."""
        if key in self.metrics:
            return self.metrics[key]
        if not self.owns(key):
            return None
        label, kind, reading = self.family_meta
        return label.format(key[len(self.family or "") :]), kind, reading

    def own_data(self, data: Any, empty: Any = None) -> Any:
        """Its own data in an ``EvalData`` (``empty`` where the recipe gave it none)."""
        return data.parts.get(self.name) or empty

    def measured(self, phase: Mapping[str, Any]) -> bool:
        """Whether a phase's metrics hold any of its own."""
        return any(self.owns(k) for k in phase)

    def dataset(self, key: str, where: Datasets) -> tuple[str, str, str] | None:
        """(model-index dataset type, dataset name, split) metric ``key`` was measured on (None: not its own)."""
        return None

    def headline(
        self, base: Mapping[str, Any], edited: Mapping[str, Any], control: Mapping[str, Any], installs: bool
    ) -> list[str]:
        """Its sentences in the card's opening section, from the phases' metrics (``installs``: the method
        adds a behaviour rather than removing one)."""
        return []

    def fold(self, section: Any, phase: str, result: Any) -> Any:
        """Its top-level section of metrics.json with ``phase``'s samples added (``samples`` parts only)."""
        raise NotImplementedError

    def card(self, metrics: Mapping[str, Any]) -> list[str]:
        """Its own section of the card, after the before/after table (default: none; a ``samples`` part shows
        its samples here)."""
        return []

    def runs_on(self, phase: str) -> bool:
        """Whether it runs on ``phase`` (``phases``)."""
        return self.phases is None or phase in self.phases

    def units(self, data: Any, opts: SuiteOptions) -> int:
        """Rows ``run`` reports through ``on_batch``."""
        raise NotImplementedError

    def wanted(self, data: Any, opts: SuiteOptions) -> bool:
        """Whether the part runs on this data with these options."""
        return self.units(data, opts) > 0

    def run(
        self,
        model,
        tokenizer,
        data: Any,
        opts: SuiteOptions,
        on_batch: Callable[[int], None],
        baseline: Baseline,
        phase: str,
    ) -> dict[str, float] | Any:
        """Flat metric names → numbers for the phase's section; a ``samples`` part returns its samples."""
        raise NotImplementedError
