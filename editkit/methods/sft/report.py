"""The card's part of an `sft` run: it installs a behaviour, measured by the refusal metrics it names."""

from __future__ import annotations

from editkit.eval.refusal.metrics import REFUSAL_HEADLINE, REFUSAL_METRICS
from editkit.methods.report import Report


class SftReport(Report):
    installs = True
    metrics = REFUSAL_METRICS
    metric_sets = {
        "refusal_rate": ("harmful prompts", ("eval_harmful",)),
        "over_refusal_rate": ("harmless prompts", ("eval_harmless",)),
        "refusal_rate_judge": ("harmful prompts", ("eval_harmful",)),
        "over_refusal_rate_judge": ("harmless prompts", ("eval_harmless",)),
        "harmless_kl": ("harmless prompts", ("eval_harmless",)),
        "harmless_kl_answered": ("harmless prompts", ("eval_harmless",)),
    }
    headline = REFUSAL_HEADLINE
