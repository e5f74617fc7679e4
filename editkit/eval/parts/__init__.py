"""The evaluation suite every run measures on every phase, one module per part, registered here in the order
they run (one line each). ``editkit.eval.suite.evaluate`` runs them; ``evaluation_units`` sums their units.

Add a part: a ``SuitePart`` subclass in its own module (``name``, ``label``, ``units``, ``run`` returning flat
metric names → numbers; its recipe ``fields``, ``load`` for its data, ``metrics`` for the card and the
model-index) and one line below; its fields then validate in every recipe's ``eval:`` block, its data loads
with the recipe's, and its metrics appear in every phase's section of metrics.json and in the card's
before/after table. A part whose results are samples rather than numbers (``samples``: the greedy generations)
keeps them in its own section of metrics.json and shows them in its own card section (``card``)."""

from __future__ import annotations

from editkit.eval.parts.base import Baseline, Datasets, SuiteOptions, SuitePart
from editkit.eval.parts.blimp import Blimp
from editkit.eval.parts.drift import Drift
from editkit.eval.parts.generations import Generations
from editkit.eval.parts.heldout import Heldout
from editkit.eval.parts.perplexity import Perplexity
from editkit.eval.parts.target import TargetAccuracy

__all__ = ["PARTS", "Baseline", "Datasets", "SuiteOptions", "SuitePart"]

PARTS: dict[str, SuitePart] = {
    p.name: p for p in (TargetAccuracy(), Heldout(), Perplexity(), Blimp(), Drift(), Generations())
}
