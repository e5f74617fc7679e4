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

import torch

from editkit.eval.pairwise import pairwise_margins
from editkit.eval.parts.base import SuitePart
from editkit.eval.subsets import answer_class, answer_classes


def class_key(answer: str) -> str:
    """Metric-name form of an answer class: ``" bad"`` → ``target_accuracy/bad``."""
    return "target_accuracy/" + (" ".join(answer.split()) or repr(answer))


def target_metrics(triplets: list[dict], margins: torch.Tensor) -> dict[str, float]:
    """Accuracy, per-answer-class accuracy, balanced accuracy and mean signed margin of the target set."""
    right = margins > 0
    m = {"target_accuracy": float(right.float().mean()) if len(triplets) else 0.0}
    classes = answer_classes(triplets)
    if classes:
        per = {}
        for c in classes:
            idx = [i for i, t in enumerate(triplets) if answer_class(t) == c]
            per[c] = float(right[idx].float().mean())
            m[class_key(c)] = per[c]
        m["target_balanced_accuracy"] = sum(per.values()) / len(per)
    if len(triplets):
        m["target_mean_margin"] = float(margins.mean())
    return m


class TargetAccuracy(SuitePart):
    name = "target"
    label = "target accuracy"

    def units(self, data, opts) -> int:
        return 2 * len(data.target_test or [])

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        margins = pairwise_margins(
            model, tokenizer, data.target_test, batch_size=opts.batch_size, on_batch=on_batch
        )
        return target_metrics(data.target_test, margins)
