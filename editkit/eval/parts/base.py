"""What every part of the evaluation suite is: a name, the rows it scores (for progress), and ``run`` on the
model as it is in one phase; and the one piece of state a later phase needs from the base phase.

The suite (``editkit.eval.suite.evaluate``) runs the registered parts in order on the base model, the edited
model, the random control and every comparison edit; each returns flat metric names → numbers for that
phase's section of metrics.json.
"""

from __future__ import annotations

from collections.abc import Callable
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


class SuitePart:
    """One evaluation of the suite. Subclasses set ``name`` and ``label`` and implement the three methods."""

    name: ClassVar[str]
    #: what the progress line says while it runs (None: the part says it itself)
    label: ClassVar[str | None]

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
    ) -> dict[str, float]:
        raise NotImplementedError
