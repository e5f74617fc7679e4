"""Target accuracy: pairwise accuracy on the held-out (test) target items, per answer class, balanced, and the
mean signed margin.

  target_accuracy            pairwise accuracy on the held-out (test) target items
  target_accuracy/<answer>   the same on the items whose right answer is <answer> (sets with 2-10 distinct
                             right answers, e.g. " bad" / " good"): a removal lowers every class, a tilt
                             towards one answer raises one class and lowers the other
  target_balanced_accuracy   mean of the per-answer accuracies
  target_mean_margin         mean of ℓ(correct) − ℓ(incorrect) (length-normalised log-probs; > 0 = right)
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from editkit.eval.pairwise import pairwise_margins
from editkit.eval.parts.base import SuitePart
from editkit.eval.subsets import answer_class, answer_classes
from editkit.methods.report import finite, num

#: the run's headline number (the card, the verdict and the robustness table read it by this name)
TARGET = "target_accuracy"
#: per-answer-class target accuracy: ``target_accuracy/<right answer>``
CLASS_PREFIX = TARGET + "/"
BALANCED = "target_balanced_accuracy"
MARGIN = "target_mean_margin"


def class_key(answer: str) -> str:
    """Metric-name form of an answer class: ``" bad"`` → ``target_accuracy/bad``."""
    return CLASS_PREFIX + (" ".join(answer.split()) or repr(answer))


def target_metrics(triplets: list[dict], margins: torch.Tensor) -> dict[str, float]:
    """Accuracy, per-answer-class accuracy, balanced accuracy and mean signed margin of the target set."""
    right = margins > 0
    m = {TARGET: float(right.float().mean()) if len(triplets) else 0.0}
    classes = answer_classes(triplets)
    if classes:
        per = {}
        for c in classes:
            idx = [i for i, t in enumerate(triplets) if answer_class(t) == c]
            per[c] = float(right[idx].float().mean())
            m[class_key(c)] = per[c]
        m[BALANCED] = sum(per.values()) / len(per)
    if len(triplets):
        m[MARGIN] = float(margins.mean())
    return m


TILT = 0.05
"""A class accuracy rising by this much while another falls by as much reads as a tilt, not a removal."""


def per_class(b: Mapping, e: Mapping) -> list[str]:
    """Per-answer-class accuracy before → after, and whether the edit removed or tilted the judgement."""
    keys = sorted(k for k in set(b) & set(e) if k.startswith(CLASS_PREFIX))
    keys = [k for k in keys if finite(b[k]) and finite(e[k])]
    if not keys:
        return []
    parts = [f'"{k[len(CLASS_PREFIX) :]}" {num(b[k])} → {num(e[k])}' for k in keys]
    s = "By right answer: " + ", ".join(parts)
    if finite(b.get(BALANCED)) and finite(e.get(BALANCED)):
        s += f"; balanced accuracy {num(b[BALANCED])} → {num(e[BALANCED])}"
    if finite(b.get(MARGIN)) and finite(e.get(MARGIN)):
        s += f"; mean margin ℓ⁺ − ℓ⁻ {num(b[MARGIN])} → {num(e[MARGIN])}"
    out = [s + "."]
    up = [k for k in keys if e[k] - b[k] >= TILT]
    down = [k for k in keys if b[k] - e[k] >= TILT]
    if up and down:
        favoured = ", ".join(f'"{k[len(CLASS_PREFIX) :]}"' for k in up)
        out.append(
            f"**The edit tilts the model towards {favoured}** (that class got more accurate while another got "
            f"less, by ≥ {TILT} each): the pairwise accuracy near chance comes from a preference for one "
            "answer, not from a removed judgement."
        )
    return out


def headline(b: Mapping, e: Mapping, c: Mapping, installs: bool) -> list[str]:
    """The card's sentences on the target accuracy: before → after (the control beside it), whether it
    dropped at all, and the per-answer-class view."""
    lines = []
    if finite(b.get(TARGET)) and finite(e.get(TARGET)):
        s = (
            f"Target pairwise accuracy went from {num(b[TARGET])} to "
            f"{num(e[TARGET])} (0.5 = chance: the model prefers the correct and the incorrect "
            "answer equally often)"
        )
        if finite(c.get(TARGET)):
            s += f"; a random edit of the same size gives {num(c[TARGET])}"
        lines.append(s + ".")
        if not installs and e[TARGET] >= b[TARGET]:
            lines.append(
                "**The target accuracy did not drop: this run removed nothing measurable** (see the "
                "tables below before using this model as an ablation)."
            )
    return lines + per_class(b, e)


class TargetAccuracy(SuitePart):
    name = "target"
    label = "target accuracy"
    metrics = {
        TARGET: ("target pairwise accuracy", "accuracy", "the capability removed: lower = removed"),
        BALANCED: (
            "target balanced accuracy",
            "balanced_accuracy",
            "mean over answer classes: lower = removed",
        ),
        MARGIN: (
            "target mean margin ℓ⁺ − ℓ⁻",
            "mean_margin",
            "> 0 prefers the right answer; towards 0 = removed, < 0 = flipped",
        ),
    }
    family = CLASS_PREFIX
    family_meta = (
        'target accuracy where "{}" is right',
        "accuracy",
        "one answer class: a removal lowers every class, a tilt raises one",
    )
    family_after = 1  # the accuracy, its answer classes, then balanced accuracy and mean margin

    def dataset(self, key, where):
        return (*where.target, "test") if self.owns(key) else None

    def headline(self, base, edited, control, installs):
        return headline(base, edited, control, installs)

    def units(self, data, opts) -> int:
        return 2 * len(data.target_test or [])

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        margins = pairwise_margins(
            model, tokenizer, data.target_test, batch_size=opts.batch_size, on_batch=on_batch
        )
        return target_metrics(data.target_test, margins)
