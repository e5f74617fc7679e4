"""The evaluation suite every method gets, run on the base model, the edited model, the control and every
comparison edit: the parts registered in ``editkit.eval.parts.PARTS``, in registry order, each one module. What a
part writes is documented in its module; every name is flat, in metrics.json and the card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from editkit.eval.parts import PARTS, Baseline, SuiteOptions
from editkit.model.sizing import model_eval_batch_size


@dataclass
class EvalData:
    target_test: list[dict] | None
    heldout: dict[str, list[dict]]
    general_test: list[str]
    #: each part's own data (``SuitePart.load``: BLiMP's pairs, drift's prompts, ...), by part name
    parts: dict[str, Any] = field(default_factory=dict)


def part_data(
    ev,
    general_test: list[str],
    seed: int,
    *,
    target_test: list[dict] | None = None,
    with_base: bool = True,
    skip: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Every registered part's own data from a validated ``eval`` block but the ``skip``ped parts'
    (``with_base=False``: leave out the parts that compare with a base phase, for a model evaluated on its
    own). A part left out loads nothing."""
    out: dict[str, Any] = {}
    for part in PARTS.values():
        if part.name in skip or (part.needs_base and not with_base):
            continue
        got = part.load(ev, general_test, seed, target_test=target_test)
        if got is not None:
            out[part.name] = got
    return out


def evaluation_units(data: EvalData, perplexity_fn: Callable | None = None, phase: str = "base") -> int:
    """How many scored rows ``evaluate`` goes through on ``phase`` (the total of its progress reports)."""
    opts = SuiteOptions(batch_size=1, perplexity_fn=perplexity_fn)
    return sum(p.units(data, opts) for p in PARTS.values() if p.runs_on(phase) and p.wanted(data, opts))


class _Rows:
    """Reports exactly ``n`` rows for a part, whatever its batches reported (short texts are skipped)."""

    def __init__(self, n: int, count: Callable[[int], None]):
        self.n, self.done, self.count = n, 0, count

    def __call__(self, k: int) -> None:
        k = min(k, self.n - self.done)
        self.done += k
        if k:
            self.count(k)

    def finish(self) -> None:
        self(self.n - self.done)


def evaluate(
    model,
    tokenizer,
    data: EvalData,
    *,
    phase: str = "base",
    baseline: Baseline | None = None,
    batch_size: int | None = None,
    perplexity_fn: Callable | None = None,
    progress: Callable[[str], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
    samples: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Run the suite on ``model`` as it is now (hooks included), as phase ``phase``: the parts that run on
    that phase (``SuitePart.phases``), in registry order; returns their numbers.

    ``baseline``: what the base phase measured for the others (drift's base distribution) — filled when
    ``phase`` is ``"base"``, read otherwise. ``progress(text)`` names each part as it starts; ``on_rows(k)``
    counts scored rows, adding up to ``evaluation_units(data, perplexity_fn, phase)`` by the end.
    ``samples``: filled with what the ``samples`` parts return (part name → samples).
    """
    if batch_size is None:  # 16 on the CPU, sized from the free memory on an accelerator
        batch_size = model_eval_batch_size(model)
    opts = SuiteOptions(batch_size, perplexity_fn, progress or (lambda _m: None))
    baseline = baseline if baseline is not None else Baseline()
    samples = {} if samples is None else samples
    m: dict[str, float] = {}
    for part in PARTS.values():
        if not (part.runs_on(phase) and part.wanted(data, opts)):
            continue
        if part.label:
            opts.say(part.label)
        rows = _Rows(part.units(data, opts), on_rows or (lambda _k: None))
        got = part.run(model, tokenizer, data, opts, rows, baseline, phase)
        if part.samples:
            samples[part.name] = got
        else:
            m.update(got)
        rows.finish()
    return m
