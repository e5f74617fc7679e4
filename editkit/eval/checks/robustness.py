"""Robustness on paraphrases and answer frames: does a removal hold beyond the prompts it was fitted on?

The target's test items (and one held-out capability's, as a control that should not drop) are asked again in
every paraphrase family of ``editkit.eval.robustness.families`` — rule-based rewrites, stored paraphrases and
the answer-frame families (the same question with answers the fit never saw) — on the base and the edited
model. The judge reports each family's drop and retained removal (drop ÷ the drop on the prompts as written)
and the card's pairwise removal rule (``REMOVAL_RULE``): *removed* only when the drop carries over to the
answer frames the base model can do.

Until editkit 0.x this ran as its own stage, stored under ``metrics['robustness']`` and switched by
``eval.robustness`` / ``eval.robustness_families`` / ``eval.robustness_min_headroom``; recipes with those fields
still load (:data:`LEGACY_FIELDS`) and stored runs with that section still render (:meth:`Robustness.legacy`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator

from editkit.eval.checks.base import Check, CheckData, CheckResult, CheckSpec, fmt
from editkit.eval.parts.target import TARGET
from editkit.eval.robustness.families import FAMILIES, build_families
from editkit.eval.robustness.report import (
    REMOVAL_RULE,
    carry_over_verdict,
    robustness_report,
    score_families,
)
from editkit.methods.report import num

NAME = "robustness"
#: the ``eval:`` fields of recipes written before this was a check → this check's option (None: on/off)
LEGACY_FIELDS = {
    "robustness": None,
    "robustness_families": "families",
    "robustness_min_headroom": "min_headroom",
}


class RobustnessSpec(CheckSpec):
    """``eval.checks.robustness``."""

    families: list[str] | None = Field(None, description="families to run (default: all)")
    min_headroom: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        description="families whose base accuracy is within this of chance (0.5) cannot show a removal; "
        "they are reported but left out of the worst/mean summary",
    )

    @field_validator("families")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        unknown = [f for f in v or [] if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
        return v


@dataclass
class RobustnessResult(CheckResult):
    #: set (``target``, ``control:<capability>``) → family → pairwise accuracy
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    #: set → family → items
    n: dict[str, dict[str, int]] = field(default_factory=dict)


def family_sets(data: CheckData, spec: RobustnessSpec) -> dict[str, dict[str, list[dict]]]:
    """``target`` (the target's test items) and ``control:<name>`` (the first held-out capability by name),
    each rewritten by every family; built once per (data, spec)."""
    memo = data.derived.setdefault(NAME, {})
    key = repr(spec)
    if key not in memo:
        sets = {"target": data.target_test}
        if data.heldout:
            name = sorted(data.heldout)[0]
            sets[f"control:{name}"] = data.heldout[name]
        memo[key] = {
            label: build_families(items, families=spec.families, seed=data.seed, tokenizer=data.tokenizer)
            for label, items in sets.items()
            if items
        }
    return memo[key]


class Robustness(Check):
    name = NAME
    title = "Robustness on paraphrases and answer frames"
    paper = (
        "Lynch et al. 2024, Eight Methods to Evaluate Robust Unlearning in LLMs (arXiv 2402.16835): rephrased "
        "and reformatted questions recover shallowly unlearned knowledge"
    )
    spec_cls = RobustnessSpec
    phases = ("base", "edited")
    legacy_fields = LEGACY_FIELDS
    missing_note = (
        "Robustness was not measured for this run (`eval.checks` switched it off, or no target data): the "
        "removal has only been checked on the prompt format it was fitted on."
    )

    def units(self, data: CheckData, spec: RobustnessSpec) -> int:
        return sum(2 * len(v) for fams in family_sets(data, spec).values() for v in fams.values())

    def run(self, phase, model, data, spec: RobustnessSpec, *, on_units=None) -> RobustnessResult:
        res = RobustnessResult()
        for label, fams in family_sets(data, spec).items():
            res.scores[label] = score_families(
                model,
                data.tokenizer,
                fams,
                margins_of=lambda items: data.margins(phase, model, items, on_units),
            )
            res.n[label] = {k: len(v) for k, v in fams.items() if v}
        return res

    def judge(self, phases: Mapping[str, Mapping], spec: Mapping) -> dict[str, Any]:
        b, e = phases.get("base") or {}, phases.get("edited") or {}
        labels = [k for k in (b.get("scores") or {}) if k in (e.get("scores") or {})]
        if not labels:
            return {"pass": None, "summary": "needs the base and the edited model", "reports": {}}
        reports = {
            k: robustness_report(
                b["scores"][k],
                e["scores"][k],
                b["n"][k],
                min_headroom=float(spec.get("min_headroom", RobustnessSpec().min_headroom)),
            )
            for k in labels
        }
        verdict = carry_over_verdict((reports.get("target") or {}).get("families") or {}, None, None)
        ok = passes(verdict)
        summ = (reports.get("target") or {}).get("summary") or {}
        worst = (
            f"worst family {summ['worst_family']} (retained removal {num(summ['worst_retained'])})"
            if summ.get("worst_retained") is not None
            else "retained removal undefined"
        )
        carry = verdict and verdict.get("mean_carry_over")
        summary = f"{worst}; mean carry-over to unseen answer frames {fmt(carry, 2)}"
        return {"pass": ok, "summary": summary, "reports": reports, "verdict": verdict}

    def section(self, stored: Mapping) -> list[str]:
        return report_lines(((stored.get("judge") or {}).get("reports")) or {})

    def events(self, stored: Mapping) -> list[dict[str, Any]]:
        """One ``families`` event per set (the monitor's paraphrase table)."""
        out = []
        for label, rep in (((stored.get("judge") or {}).get("reports")) or {}).items():
            fams = (rep or {}).get("families") or {}
            out.append(
                {
                    "capability": label,
                    "families": [
                        {"family": f, "n": r.get("n"), "before": r.get("before"), "after": r.get("after")}
                        for f, r in fams.items()
                    ],
                }
            )
        return out

    def legacy(self, metrics: Mapping) -> Mapping | None:
        """A run stored before this was a check: its ``robustness`` section, as this check's stored form."""
        old = metrics.get(NAME)
        if not isinstance(old, Mapping) or not old:
            return None
        judged = {"pass": passes(removal_verdict(metrics)), "summary": "stored by an earlier editkit"}
        return {"phases": {}, "judge": {**judged, "reports": old}}


def passes(verdict: Mapping | None) -> bool | None:
    """The check's pass from the pairwise removal rule: *removed* passes, *unverified* (or no verdict) is
    undecided, *answer tokens only* and *not removed* fail."""
    return None if verdict is None else {"removed": True, "unverified": None}.get(verdict["status"], False)


def robustness_reports(metrics: Mapping) -> dict[str, Any]:
    """set → the family report (``robustness_report``) of a stored run, from this check or, for runs stored
    before it was one, from their ``robustness`` section; {} when it did not run."""
    stored = (metrics.get("checks") or {}).get(NAME)
    if isinstance(stored, Mapping):
        return dict(((stored.get("judge") or {}).get("reports")) or {})
    old = metrics.get(NAME)
    return dict(old) if isinstance(old, Mapping) else {}


def removal_verdict(metrics: Mapping) -> dict | None:
    """The card's pairwise removal rule (``REMOVAL_RULE``) for a stored run: the target's families when this
    check ran, else the base and edited target accuracy alone (then at best *unverified*). None when the
    run has no pairwise target accuracy (refusal runs, behaviour installs)."""
    fams = (robustness_reports(metrics).get("target") or {}).get("families") or {}
    before = (metrics.get("base") or {}).get(TARGET)
    after = (metrics.get("edited") or {}).get(TARGET)
    return carry_over_verdict(fams, before, after)


def report_lines(reports: Mapping) -> list[str]:
    """The card's tables: per set, per family before/after/drop (and retained removal for the target)."""
    describe = {k: f.description for k, f in FAMILIES.items()}
    describe["original"] = "the evaluation prompts as written"
    lines = [
        "The target metric on rewritten prompts. Retained removal = drop on the family ÷ drop on the original "
        "prompts (1 = the removal carries over fully, 0 = not at all).",
        "",
    ]
    for name, rep in reports.items():
        fams = (rep or {}).get("families") or {}
        is_target = name == "target"
        title = "Target capability" if is_target else f"Control: {name.split(':', 1)[-1]} (should not drop)"
        head = "| family | n | before | after | drop |" + (" retained removal |" if is_target else "")
        lines += [f"#### {title}", "", head + " what it is |", "| --- " * head.count("|") + "|"]
        for fam, r in fams.items():
            flag = "" if r.get("informative", True) else " (near chance before: not counted)"
            row = (
                f"| {fam} | {r.get('n', '')} | {num(r.get('before'))} | {num(r.get('after'))} | "
                f"{num(r.get('drop'))} |"
            )
            if is_target:
                row += f" {num(r.get('retained'))}{flag} |"
            lines.append(row + f" {describe.get(fam, '')} |")
        lines.append("")
        if is_target:
            lines += _summary_lines((rep or {}).get("summary") or {}, fams)
    return lines


def _summary_lines(summ: Mapping, fams: Mapping) -> list[str]:
    if summ.get("worst_retained") is not None:
        lines = [
            f"Worst family: **{summ.get('worst_family')}** (retained removal {num(summ['worst_retained'])}); "
            f"mean retained removal over {summ.get('families')} families: {num(summ.get('mean_retained'))}."
        ]
    else:
        lines = [
            "Retained removal is undefined: "
            + (summ.get("note") or "no family could be summarised")
            + ". The per-family accuracies above are still what was measured."
        ]
    verdict = carry_over_verdict(fams, None, None)
    if verdict is not None:
        lines += ["", f"**Verdict: {verdict['sentence']}.** {REMOVAL_RULE}"]
    return lines + [""]
