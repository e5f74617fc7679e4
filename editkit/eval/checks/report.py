"""The removal checks in the card: the headline line at the top and the "Removal checks" section."""

from __future__ import annotations

from collections.abc import Mapping

from editkit.eval.checks import CHECKS
from editkit.eval.checks.base import fmt
from editkit.eval.checks.verdict import VERDICT_RULE, headline_verdict


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


def checks_section(metrics: Mapping) -> list[str]:
    store = metrics.get("checks") or {}
    names = [n for n in CHECKS if isinstance(store.get(n), Mapping)]
    if not names:
        return []
    lines = ["## Removal checks", ""]
    v = verdict_of(metrics)
    if v is not None:
        lines += [f"Verdict: **{v['label']}**. {VERDICT_RULE}", ""]
    for n in names:
        check, stored = CHECKS[n], store[n]
        j = stored.get("judge") or {}
        ok = {True: "pass", False: "FAIL", None: "undecided"}[j.get("pass")]
        secs = stored.get("seconds") or {}
        lines += [f"### {check.title}: {ok}", "", f"{j.get('summary', '')}. Paper: {check.paper}.", ""]
        try:
            lines += check.section(stored)
        except (KeyError, TypeError, AttributeError):  # a metrics.json from another version: numbers only
            lines.append("(stored results in a form this editkit cannot render)")
        if secs:
            lines += ["", "Time: " + ", ".join(f"{p} {fmt(s, 1)} s" for p, s in secs.items()) + "."]
        lines.append("")
    return lines
