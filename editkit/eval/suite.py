"""The evaluation suite every method gets, run on the base model, the edited model, the control and every
comparison edit: the parts registered in ``editkit.eval.parts.PARTS``, in registry order, each one module. What a
part writes is documented in its module; every name is flat, in metrics.json and the card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from editkit.eval.parts import PARTS, Baseline, SuiteOptions
from editkit.eval.refusal.chat import generate
from editkit.model.sizing import model_eval_batch_size


@dataclass
class EvalData:
    target_test: list[dict] | None
    heldout: dict[str, list[dict]]
    general_test: list[str]
    #: each part's own data (``SuitePart.load``: BLiMP's pairs, drift's prompts, ...), by part name
    parts: dict[str, Any] = field(default_factory=dict)
    generation_prompts: list[str] = field(default_factory=list)


def part_data(
    ev, general_test: list[str], seed: int, *, with_base: bool = True, skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Every registered part's own data from a validated ``eval`` block but the ``skip``ped parts'
    (``with_base=False``: leave out the parts that compare with a base phase, for a model evaluated on its
    own). A part left out loads nothing."""
    out: dict[str, Any] = {}
    for part in PARTS.values():
        if part.name in skip or (part.needs_base and not with_base):
            continue
        got = part.load(ev, general_test, seed)
        if got is not None:
            out[part.name] = got
    return out


def evaluation_units(data: EvalData, perplexity_fn: Callable | None = None) -> int:
    """How many scored rows ``evaluate`` goes through (the total of its progress reports)."""
    opts = SuiteOptions(batch_size=1, perplexity_fn=perplexity_fn)
    return sum(p.units(data, opts) for p in PARTS.values() if p.wanted(data, opts))


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
) -> dict[str, float]:
    """Run the suite on ``model`` as it is now (hooks included), as phase ``phase``.

    ``baseline``: what the base phase measured for the others (drift's base distribution) — filled when
    ``phase`` is ``"base"``, read otherwise. ``progress(text)`` names each part as it starts; ``on_rows(k)``
    counts scored rows, adding up to ``evaluation_units(data, perplexity_fn)`` by the end.
    """
    if batch_size is None:  # 16 on the CPU, sized from the free memory on an accelerator
        batch_size = model_eval_batch_size(model)
    opts = SuiteOptions(batch_size, perplexity_fn, progress or (lambda _m: None))
    baseline = baseline if baseline is not None else Baseline()
    m: dict[str, float] = {}
    for part in PARTS.values():
        if not part.wanted(data, opts):
            continue
        if part.label:
            opts.say(part.label)
        rows = _Rows(part.units(data, opts), on_rows or (lambda _k: None))
        m.update(part.run(model, tokenizer, data, opts, rows, baseline, phase))
        rows.finish()
    return m


def greedy_generations(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of ``prompts`` (no chat template: the target prompts are completions)."""
    if not prompts:
        return []
    return generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=len(prompts), chat=False
    )
