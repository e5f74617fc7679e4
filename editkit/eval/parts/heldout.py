"""Held-out capabilities: pairwise accuracy of every other capability's test items (``heldout/<name>``) and
their mean (``general_capability_score``)."""

from __future__ import annotations

from editkit.eval.pairwise import pairwise_accuracy
from editkit.eval.parts.base import SuitePart
from editkit.methods.report import finite, num

PREFIX = "heldout/"
#: a held-out capability that lost more than this (pairwise accuracy) is named in the card's opening section
COST = 0.03


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

    def headline(self, base, edited, control, installs):
        """What the edit cost the other capabilities: each one that lost more than ``COST``, by name."""
        names = [
            k for k in sorted(base) if k.startswith(PREFIX) and finite(base[k]) and finite(edited.get(k))
        ]
        if not names:
            return []
        fell = [k for k in names if edited[k] < base[k] - COST]
        within = f"within {COST * 100:.0f} points of the base model"
        if not fell:
            return [f"Held-out capabilities: all {len(names)} {within}."]
        lost = ", ".join(
            f"{k[len(PREFIX) :]} {num(base[k])} → {num(edited[k])} ({(edited[k] - base[k]) * 100:+.1f} points)"
            for k in fell
        )
        rest = len(names) - len(fell)
        return [
            f"**What else it cost, held out: {lost}**" + (f"; the other {rest} {within}." if rest else ".")
        ]

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
