"""Held-out capabilities: pairwise accuracy of every other capability's test items (``heldout/<name>``) and
their mean (``general_capability_score``)."""

from __future__ import annotations

from editkit.eval.pairwise import pairwise_accuracy
from editkit.eval.parts.base import SuitePart


class Heldout(SuitePart):
    name = "heldout"
    label = None  # one line per capability

    def units(self, data, opts) -> int:
        return sum(2 * len(v) for v in data.heldout.values())

    def wanted(self, data, opts) -> bool:
        return bool(data.heldout)

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        m = {}
        for name, items in data.heldout.items():
            opts.say(f"held-out: {name}")
            m[f"heldout/{name}"] = pairwise_accuracy(
                model, tokenizer, items, batch_size=opts.batch_size, on_batch=on_batch
            )
        if m:
            m["general_capability_score"] = sum(m.values()) / len(m)
        return m
