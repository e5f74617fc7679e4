"""Scoring and judging the paraphrase families: ``score_families`` (pairwise accuracy per family, in one
pass), ``robustness_report`` (per-family drop and retained removal before/after an edit) and the removal
rule (``REMOVAL_RULE``, ``carry_over_verdict``) behind the card's "removed".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from editkit.errors import DataError
from editkit.eval.pairwise import pairwise_margins
from editkit.eval.robustness.families import ANSWER_FRAME_FAMILIES

__all__ = [
    "REMOVAL_RULE",
    "carry_over_verdict",
    "score_families",
    "robustness_report",
]


def score_families(
    model,
    tokenizer,
    families: Mapping[str, Sequence[Mapping]],
    batch_size: int = 16,
    on_batch=None,
    margins_of=None,
) -> dict[str, float]:
    """Pairwise accuracy of the model on each family (``original`` included when present); empty ones skipped.

    All families are scored in one pass (full batches of similar lengths across families, each prompt read
    once), then split. ``on_batch(rows)`` counts scored answers (two per item); ``margins_of(items)``: where
    the margins come from instead (``CheckData.margins`` of a phase, shared with the other checks)."""
    names = [name for name, items in families.items() if len(items) > 0]
    flat = [item for name in names for item in families[name]]
    if margins_of is not None:
        right = (torch.tensor(margins_of(flat), dtype=torch.float32) > 0).float()
    else:
        right = (
            pairwise_margins(model, tokenizer, flat, batch_size=batch_size, on_batch=on_batch) > 0
        ).float()
    out, start = {}, 0
    for name in names:
        n = len(families[name])
        out[name] = float(right[start : start + n].mean())
        start += n
    return out


def robustness_report(
    before: Mapping[str, float], after: Mapping[str, float], n: Mapping[str, int], min_headroom: float = 0.0
) -> dict:
    """Per family before/after/drop and retained removal = drop(family) ÷ drop(original).

    Retained removal 1.0 means the family lost as much accuracy as the original prompts; 0 means the removal
    did not carry over; above 1 it lost more, below 0 the family improved. It is not clipped.
    Edge case: when the original drop is ≤ 0 (the edit removed nothing where it was aimed), the ratio is
    undefined, so every ``retained`` and the summary's ``worst_*``/``mean_retained`` are None and
    ``summary["note"]`` says why. A family whose accuracy before the edit was within ``min_headroom`` of
    chance (0.5) cannot show a removal; it is reported but flagged ``"informative": False`` and left out of
    the summary (default 0.0: every family counts). The mean is unweighted over the summarised families.
    """
    if "original" not in before or "original" not in after:
        raise DataError("robustness report: 'original' accuracy is needed before and after the edit")
    missing = sorted(set(before) ^ set(after))
    if missing:
        raise DataError(f"robustness report: families scored only before or only after: {', '.join(missing)}")
    original_drop = before["original"] - after["original"]
    defined = original_drop > 0
    families: dict[str, dict] = {}
    for name in before:
        drop = before[name] - after[name]
        families[name] = {
            "n": int(n.get(name, 0)),
            "before": before[name],
            "after": after[name],
            "drop": drop,
            "retained": (drop / original_drop) if defined else None,
            "informative": before[name] - 0.5 >= min_headroom if min_headroom > 0 else True,
        }
    summarised = {k: v for k, v in families.items() if k != "original" and v["informative"]}
    summary: dict = {
        "original_drop": original_drop,
        "families": len(summarised),
        "worst_family": None,
        "worst_retained": None,
        "mean_retained": None,
    }
    if not defined:
        summary["note"] = "no removal on the original prompts (drop <= 0): retained removal is undefined"
    elif summarised:
        worst = min(summarised, key=lambda k: summarised[k]["retained"])
        summary["worst_family"] = worst
        summary["worst_retained"] = summarised[worst]["retained"]
        summary["mean_retained"] = math.fsum(v["retained"] for v in summarised.values()) / len(summarised)
    return {"families": families, "summary": summary}


# ------------------------------------------------------------------------------------------ removal rule

MIN_ORIGINAL_DROP = 0.05  # below this the edit removed nothing measurable on its own evaluation prompts
ANSWER_FRAME_MIN_BASE = 0.60  # an answer frame counts for the verdict only if the base model is this good
CARRY_OVER_THRESHOLD = 0.5  # mean carry-over over those frames needed to call the capability removed

REMOVAL_RULE = (
    f"The card says a capability was *removed* only when (1) target accuracy on the evaluation prompts fell by "
    f"at least {MIN_ORIGINAL_DROP * 100:.0f} points and (2) the removal carries over to the answer-frame "
    f"families the fit never saw ({', '.join(ANSWER_FRAME_FAMILIES)}): over those on which the base model "
    f"scores at least {ANSWER_FRAME_MIN_BASE:.2f}, the mean carry-over is at least {CARRY_OVER_THRESHOLD:.1f}. "
    "Carry-over of a family = its accuracy drop ÷ the drop on the evaluation prompts, where the latter is "
    "capped at the family's own distance to chance (before − 0.5), clipped to [0, 1]. An edit that only moves "
    "the preference between its training answer tokens fails (2)."
)


def carry_over_verdict(rob: Mapping, before, after) -> dict | None:
    """Whether a removal may be called *removed* (``REMOVAL_RULE``): ``rob`` is the target's per-family
    report (``robustness_report(...)["families"]``, may be empty), ``before``/``after`` the target accuracy
    on the evaluation prompts (its ``original`` family wins when present).

    Returns None without finite accuracies. Otherwise ``status`` is ``removed``, ``answer_tokens_only``
    (dropped on the evaluation prompts, not on unseen answer frames), ``unverified`` (dropped, but no answer
    frame the base model can do was measured) or ``not_removed``; ``removed`` is True only for the first.
    Pure, so a stored metrics.json can be re-judged
    (``editkit.eval.checks.robustness.removal_verdict`` reads it from one).
    """
    orig = rob.get("original") or {}
    before, after = orig.get("before", before), orig.get("after", after)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (before, after)):
        return None
    drop = float(before) - float(after)
    carry: dict[str, float] = {}
    for name in ANSWER_FRAME_FAMILIES:
        r = rob.get(name)
        if (
            not r
            or not isinstance(r.get("before"), (int, float))
            or not isinstance(r.get("after"), (int, float))
        ):
            continue
        if r["before"] < ANSWER_FRAME_MIN_BASE:
            continue
        possible = min(drop, r["before"] - 0.5)
        carry[name] = min(1.0, max(0.0, (r["before"] - r["after"]) / possible)) if possible > 0 else 0.0
    mean = math.fsum(carry.values()) / len(carry) if carry else None
    if drop < MIN_ORIGINAL_DROP:
        status = "not_removed"
    elif mean is None:
        status = "unverified"
    elif mean >= CARRY_OVER_THRESHOLD:
        status = "removed"
    else:
        status = "answer_tokens_only"
    frames = ", ".join(f"{k} {rob[k]['before']:.3f} → {rob[k]['after']:.3f}" for k in carry)
    sentence = {
        "removed": f"removed: the drop carries over to answer frames the fit never saw (mean carry-over "
        f"{mean if mean is not None else 0:.2f} ≥ {CARRY_OVER_THRESHOLD}; {frames})",
        "answer_tokens_only": "NOT removed: the edit changed the answer tokens, not the capability — accuracy "
        f"fell {before:.3f} → {after:.3f} on the evaluation prompts but much less on answer frames the fit never "
        f"saw (mean carry-over {mean if mean is not None else 0:.2f} < {CARRY_OVER_THRESHOLD}; {frames})",
        "unverified": f"weakened on the evaluation prompts ({before:.3f} → {after:.3f}), but NOT shown to be "
        "removed: no answer frame the fit never saw (and the base model can do) was measured",
        "not_removed": f"NOT removed: target accuracy {before:.3f} → {after:.3f} (drop below "
        f"{MIN_ORIGINAL_DROP * 100:.0f} points)",
    }[status]
    return {
        "status": status,
        "removed": status == "removed",
        "original_drop": drop,
        "carry_over": carry,
        "mean_carry_over": mean,
        "threshold": CARRY_OVER_THRESHOLD,
        "min_base": ANSWER_FRAME_MIN_BASE,
        "min_original_drop": MIN_ORIGINAL_DROP,
        "sentence": sentence,
        "rule": REMOVAL_RULE,
    }
