"""Held-out capabilities: pairwise accuracy of every other capability's test items (``heldout/<name>``) and
their mean (``general_capability_score``)."""

from __future__ import annotations

from editkit.eval.pairwise import pairwise_accuracy
from editkit.eval.parts.base import SuitePart

PREFIX = "heldout/"


class Heldout(SuitePart):
    name = "heldout"
    label = None  # one line per capability
    metrics = {
        "general_capability_score": (
            "general capability score",
            "accuracy",
            "mean of the held-out capabilities: should not move",
        ),
    }
    family = PREFIX
    family_meta = ("held-out: {} accuracy", "accuracy", "held-out capability: should not move")
    missing_note = "No held-out capability was measured, so there is no general capability score."
    ability = "held-out capabilities"

    def dataset(self, key, where):
        if key.startswith(PREFIX):
            name = key[len(PREFIX) :]
            return name, f"{name} (held-out capability, pairwise)", "test"
        if key in self.metrics:
            names = sorted(k[len(PREFIX) :] for k in where.phase if k.startswith(PREFIX))
            what = "mean of held-out capabilities: " + ", ".join(names)
            return "editkit-heldout-capabilities", what, "test"
        return None

    def units(self, data, opts) -> int:
        return sum(2 * len(v) for v in data.heldout.values())

    def wanted(self, data, opts) -> bool:
        return bool(data.heldout)

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        m = {}
        for name, items in data.heldout.items():
            opts.say(f"held-out: {name}")
            m[PREFIX + name] = pairwise_accuracy(
                model, tokenizer, items, batch_size=opts.batch_size, on_batch=on_batch
            )
        if m:
            m["general_capability_score"] = sum(m.values()) / len(m)
        return m
