"""Specificity near the target: do other capabilities survive when the target's words are in the prompt?

Thaker et al. 2024 showed that a forget-set keyword inside a retain question sinks shallow unlearning: the
edit reacts to the words, not to the capability. Here every held-out capability's test items are asked
twice: as written, and with one statement of the target capability (a training triplet's prompt with its
right answer, chosen with the recipe's seed) in front of the prompt — the same question, now mentioning the
target's words. Built from editkit's own data (``editkit/data/builtin``), so nothing new ships.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field

from editkit.eval.checks.base import Check, CheckData, CheckResult, CheckSpec, fmt, present
from editkit.eval.pairwise import pairwise_margins
from editkit.eval.subsets import stratified_subset

MAX_DROP = 0.03
SPECIFICITY_RULE = (
    f"Specificity: every other capability, asked with a statement of the target in front of its prompt, may "
    f"lose at most {MAX_DROP * 100:.0f} points of pairwise accuracy (edited vs base)."
)


class SpecificitySpec(CheckSpec):
    """``eval.checks.specificity``."""

    per_capability: int = Field(24, ge=2, description="held-out items per other capability (stratified)")


@dataclass
class SpecificityResult(CheckResult):
    near: dict[str, float] = field(default_factory=dict)
    plain: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)


def target_statement(t: Mapping) -> str:
    s = (t["prompt"] + t["correct"]).strip()
    return s if s.endswith((".", "!", "?")) else s + "."


def near_target_items(data: CheckData, per_capability: int) -> dict[str, tuple[list[dict], list[dict]]]:
    """capability → (items as written, the same items with a target statement in front)."""
    pool = data.target_train or data.target_test
    out = {}
    for cap, items in sorted(data.heldout.items()):
        plain = stratified_subset(items, per_capability, data.seed)
        rng = data.rng(f"specificity:{cap}")
        near = [dict(it, prompt=f"{target_statement(rng.choice(pool))} {it['prompt']}") for it in plain]
        out[cap] = (plain, near)
    return out


class Specificity(Check):
    name = "specificity"
    title = "Specificity near the target"
    paper = "Thaker et al. 2024, Position: LLM Unlearning Benchmarks are Weak Measures of Progress (arXiv 2410.02879)"
    spec_cls = SpecificitySpec

    def units(self, data: CheckData, spec: SpecificitySpec) -> int:
        if not data.target_train and not data.target_test:
            return 0
        return sum(4 * len(p) for p, _ in near_target_items(data, spec.per_capability).values())

    def run(self, phase, model, data, spec: SpecificitySpec, *, on_units=None) -> SpecificityResult:
        res = SpecificityResult()
        if not data.target_train and not data.target_test:
            return res
        for cap, (plain, near) in near_target_items(data, spec.per_capability).items():
            with torch.no_grad():
                m = pairwise_margins(
                    model, data.tokenizer, plain + near, batch_size=data.batch_size, on_batch=on_units
                )
            k = len(plain)
            res.plain[cap] = float((m[:k] > 0).float().mean())
            res.near[cap] = float((m[k:] > 0).float().mean())
            res.n[cap] = k
        return res

    def judge(self, phases, spec):
        b, e = phases.get("base"), phases.get("edited")
        if not b or not e or not b.get("near"):
            return {"pass": None, "summary": "needs the base and the edited model", "rule": SPECIFICITY_RULE}
        drops = {c: e["near"][c] - b["near"][c] for c in b["near"] if c in e["near"]}
        worst = min(drops, key=drops.get) if drops else None
        out: dict[str, Any] = {"near_change": drops, "rule": SPECIFICITY_RULE}
        out["pass"] = all(d >= -MAX_DROP - 1e-12 for d in drops.values()) if drops else None
        out["summary"] = (
            f"worst: {worst} {b['near'][worst]:.3f} → {e['near'][worst]:.3f} with the target's words in the prompt"
            if worst
            else "no held-out capability"
        )
        return out

    def section(self, stored: Mapping) -> list[str]:
        phases = stored.get("phases") or {}
        cols = present(phases)
        if not cols or not phases[cols[0]].get("near"):
            return []
        head = "| capability | n | " + " | ".join(f"{p}: near (plain)" for p in cols) + " |"
        lines = [head, "|" + " --- |" * (len(cols) + 2)]
        first = phases[cols[0]]
        for cap in first["near"]:
            cells = [f"{fmt(phases[p]['near'].get(cap))} ({fmt(phases[p]['plain'].get(cap))})" for p in cols]
            lines.append(f"| {cap} | {first['n'].get(cap)} | " + " | ".join(cells) + " |")
        return lines + ["", SPECIFICITY_RULE]
