"""The card's headline verdict from the removal checks, stated once (:data:`VERDICT_RULE`) and computed once
(:func:`headline_verdict`), from ``metrics['checks']`` and the target accuracies alone: a stored metrics.json
can be re-judged."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from editkit.eval.parts.target import TARGET

MIN_DROP = 0.05
"""Target accuracy drop (trained frame) below which, with no separation closed either, nothing was removed."""
TOKENS_ONLY_CLOSED = 0.5
"""Mean share of the base excess closed on unseen frames below which a trained-frame drop is a token effect."""
MOVED_CLOSED = 0.25

STATUSES = ("removed", "weakened", "hidden", "answer_tokens_only", "not_removed")

VERDICT_RULE = (
    "Headline: *removed* when the separation, probe, relearning and quantised checks all pass; *hidden* when "
    "the answers lost the capability (separation passes) but a linear probe still reads it or a small LoRA "
    "fine-tune brings it back (R > 0.5); *answer tokens only* when target accuracy fell on the trained frame "
    f"(≥ {MIN_DROP * 100:.0f} points) but the unseen answer frames the base can do kept most of their "
    f"separation (mean share of the base excess closed < {TOKENS_ONLY_CLOSED}); *not removed* when neither the "
    f"accuracy (< {MIN_DROP * 100:.0f} points) nor any frame's separation (< {MOVED_CLOSED:.0%} closed) moved; "
    "*weakened* otherwise (partly removed, or a check could not decide or was switched off)."
)

LABELS = {
    "removed": "removed",
    "weakened": "weakened",
    "hidden": "hidden",
    "answer_tokens_only": "answer tokens only",
    "not_removed": "not removed",
}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _pass(checks: Mapping, name: str) -> bool | None:
    return ((checks.get(name) or {}).get("judge") or {}).get("pass")


def headline_verdict(metrics: Mapping) -> dict[str, Any] | None:
    """``{status, label, sentence, numbers, rule}`` from ``metrics['checks']``; None when the separation
    check did not run (no checks, or a run without a pairwise target)."""
    checks = metrics.get("checks") or {}
    sep = (checks.get("separation") or {}).get("judge")
    if not sep:
        return None
    b = (metrics.get("base") or {}).get(TARGET)
    e = (metrics.get("edited") or {}).get(TARGET)
    if not (_finite(b) and _finite(e)):  # `editkit eval --checks`: the separation check's own trained frame
        phases = (checks.get("separation") or {}).get("phases") or {}
        b, e = (
            ((phases.get(p) or {}).get("frames") or {}).get("original", {}).get("accuracy")
            for p in ("base", "edited")
        )
    drop = b - e if _finite(b) and _finite(e) else None
    closures = [
        r.get("closed") for r in (sep.get("frames") or {}).values() if r.get("can_do") or not r.get("unseen")
    ]
    moved_sep = any(_finite(c) and c >= MOVED_CLOSED for c in closures)
    probe, relearn, quant = _pass(checks, "probe"), _pass(checks, "relearn"), _pass(checks, "quantised")
    rj = (checks.get("relearn") or {}).get("judge") or {}
    four = {"separation": sep.get("pass"), "probe": probe, "relearn": relearn, "quantised": quant}
    mean_closed = sep.get("mean_closed_unseen")
    if (drop is None or drop < MIN_DROP) and not moved_sep:
        status = "not_removed"
    elif all(v is True for v in four.values()):
        status = "removed"
    elif sep.get("pass") is True and (probe is False or rj.get("hidden") is True):
        status = "hidden"
    elif drop is not None and drop >= MIN_DROP and _finite(mean_closed) and mean_closed < TOKENS_ONLY_CLOSED:
        status = "answer_tokens_only"
    else:
        status = "weakened"
    numbers: dict[str, Any] = {
        TARGET: [b, e],
        "separation_pass": sep.get("pass"),
        "mean_closed_unseen": mean_closed,
        "probe_auc": [
            ((checks.get("probe") or {}).get("judge") or {}).get("base_auc"),
            ((checks.get("probe") or {}).get("judge") or {}).get("edited_auc"),
        ],
        "relearn_R": rj.get("R"),
        "quantised_max_rise": ((checks.get("quantised") or {}).get("judge") or {}).get("max_rise"),
    }
    parts = []
    for name, ok in four.items():
        j = (checks.get(name) or {}).get("judge") or {}
        if name not in checks:
            parts.append(f"{name}: not run")
        else:
            tag = {True: "pass", False: "FAIL", None: "undecided"}[ok]
            parts.append(f"{name} {tag} ({j.get('summary', '')})")
    acc = f"target accuracy {b:.3f} → {e:.3f}" if drop is not None else "no target accuracy"
    sentence = f"**{LABELS[status]}** — {acc}; " + "; ".join(parts)
    return {
        "status": status,
        "label": LABELS[status],
        "removed": status == "removed",
        "checks": four,
        "numbers": numbers,
        "sentence": sentence,
        "rule": VERDICT_RULE,
    }
