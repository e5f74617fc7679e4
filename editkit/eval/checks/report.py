"""The removal checks in the card: the headline line at the top and the "Removal checks" section."""

from __future__ import annotations

from collections.abc import Mapping

from editkit.eval.checks import CHECKS
from editkit.eval.checks.base import fmt
from editkit.eval.checks.verdict import VERDICT_RULE, headline_verdict
from editkit.eval.parts.target import TARGET


def verdict_of(metrics: Mapping) -> dict | None:
    """The stored headline verdict, recomputed from the stored checks (the rule may be newer than the run)."""
    if not (metrics.get("checks") or {}).get("separation"):
        return None
    return headline_verdict(metrics)


def headline_lines(metrics: Mapping) -> list[str]:
    """One paragraph for the top of the card: the verdict and the numbers behind it."""
    v = verdict_of(metrics)
    if v is None:
        return []
    return [
        f"**Removal checks verdict:** {v['sentence']}. (Rule and tables: [Removal checks](#removal-checks).)",
        "",
    ]


def stored_checks(metrics: Mapping) -> dict[str, Mapping]:
    """name → the stored form of every check the run has (rebuilt by ``Check.legacy`` for older runs)."""
    store = metrics.get("checks") or {}
    found = {n: store[n] if isinstance(store.get(n), Mapping) else CHECKS[n].legacy(metrics) for n in CHECKS}
    return {n: s for n, s in found.items() if s}


def checks_section(metrics: Mapping) -> list[str]:
    stored = stored_checks(metrics)
    has_target = isinstance((metrics.get("base") or {}).get(TARGET), (int, float))
    notes = [c.missing_note for n, c in CHECKS.items() if n not in stored and c.missing_note and has_target]
    if not stored and not notes:
        return []
    lines = ["## Removal checks", ""]
    v = verdict_of(metrics)
    if v is not None:
        lines += [f"Verdict: **{v['label']}**. {VERDICT_RULE}", ""]
    for n, got in stored.items():
        check = CHECKS[n]
        j = got.get("judge") or {}
        ok = {True: "pass", False: "FAIL", None: "undecided"}[j.get("pass")]
        secs = got.get("seconds") or {}
        lines += [f"### {check.title}: {ok}", "", f"{j.get('summary', '')}. Paper: {check.paper}.", ""]
        try:
            lines += check.section(got)
        except (KeyError, TypeError, AttributeError):  # a metrics.json from another version: numbers only
            lines.append("(stored results in a form this editkit cannot render)")
        if secs:
            lines += ["", "Time: " + ", ".join(f"{p} {fmt(s, 1)} s" for p, s in secs.items()) + "."]
        lines.append("")
    for note in notes:
        lines += [note, ""]
    return lines
