"""The card's body sections that do not depend on the method and report what was measured: before/after
tables, comparisons, lm-evaluation-harness, per-class accuracy (each suite part's own section, such as the
greedy generations, is the part's ``card``).
The closing sections (export check, how to reproduce, limitations, provenance) are in
``editkit.publish.card_release``."""

from __future__ import annotations

from collections.abc import Mapping

from editkit.eval.parts import PARTS
from editkit.methods.report import Report, escape_cell, finite, num
from editkit.publish.card_meta import known_metrics, label, metric_keys, metric_meta


def delta(a, b) -> str:
    if not finite(a) or not finite(b):
        return "–"
    d = b - a
    s = num(d)
    return s if s.startswith("-") or s == "0" else "+" + s


def before_after(recipe: Mapping, metrics: Mapping, report: Report) -> list[str]:
    base, edited = metrics.get("base") or {}, metrics.get("edited") or {}
    control = metrics.get("control") or {}
    lines = ["## Before and after", ""]
    if not base and not edited:
        return lines + ["No evaluation was recorded for this run.", ""]
    has_c = bool(control)
    head = (
        "| metric | base | edited | Δ edited |"
        + (" random control | Δ control |" if has_c else "")
        + " reading |"
    )
    sep = "| --- | --- | --- | --- |" + (" --- | --- |" if has_c else "") + " --- |"
    lines += [head, sep]
    known = known_metrics(report)
    for k in metric_keys(known, base, edited, control):
        b, e = base.get(k), edited.get(k)
        row = f"| {escape_cell(label(known, k))} | {num(b)} | {num(e)} | {delta(b, e)} |"
        if has_c:
            c = control.get(k)
            row += f" {num(c)} | {delta(b, c)} |"
        reading = (metric_meta(known, k) or ("", "", ""))[2]
        row += f" {reading} |"
        lines.append(row)
    lines.append("")
    lines.append(
        "Accuracies are fractions (pairwise: log p(correct) > log p(incorrect), length-normalised; 0.5 = chance)."
    )
    notes = []
    ev = recipe.get("eval") or {}
    if not has_c:
        why = "`eval.control` is off" if ev.get("control") is False else "the method has no random control"
        notes.append(
            f"No random control was evaluated ({why}), so the cost cannot be compared with a random edit of the same size."
        )
    else:
        what = (metrics.get("control_edit") or {}).get("control")
        notes.append(f"Random control: {what or 'a random edit of the same size'}.")
    notes += [p.missing_note for p in PARTS.values() if p.missing_note and not p.measured(base)]
    if ev.get("max_items"):
        notes.append(
            f"Each evaluated set was cut to {ev['max_items']} items (`eval.max_items`): a subset drawn with the "
            "recipe's seed, stratified by answer class (and answer-frame family where items have one)."
        )
    notes += base_cache_note(metrics.get("base_eval_cache") or {})
    notes += phase_cache_note(metrics.get("base_phase_cache") or {})
    lines += ["", *[f"- {n}" for n in notes], ""]
    return lines + comparisons(base, edited, metrics.get("comparisons") or {}, report)


def base_cache_note(cache: Mapping) -> list[str]:
    """Where the base evaluation came from (``eval.cache``): an earlier run's cache entry, or this run."""
    key = f"`{cache.get('key')}`"
    if cache.get("status") == "hit":
        return [
            f"Base evaluation: from cache (key {key}): the base model's responses and verdicts were measured by "
            "an earlier run with the same weights and settings (`eval.cache: false` measures them again)."
        ]
    if cache.get("status") == "stored":
        return [f"Base evaluation: measured by this run and stored in the cache (key {key}) for later runs."]
    if cache.get("status") == "unavailable":
        return [f"Base evaluation: measured by this run, not cached ({cache.get('why')})."]
    return []


def phase_cache_note(status: Mapping) -> list[str]:
    """Which of the base model's measurements came from the cache (``editkit.eval.phase_cache``)."""
    hits = sorted(k for k, v in status.items() if isinstance(v, Mapping) and v.get("status") == "hit")
    if not hits:
        return []
    return [
        f"Base model: {len(hits)} of {len(status)} measurements ({', '.join(hits)}) were read from the cache "
        "of an earlier run with the same weights, items, settings and editkit source, number for number "
        "(`eval.cache: false` measures them again)."
    ]


def lm_eval(metrics: Mapping) -> list[str]:
    """lm-evaluation-harness tasks (``eval.lm_eval``), per task metric: base → edited → random control."""
    le = metrics.get("lm_eval") or {}
    tasks = le.get("tasks") or {}
    if not tasks:
        return []
    phases = [
        p
        for p in ("base", "edited", "control")
        if any(p in r for t in tasks.values() for r in t["metrics"].values())
    ]
    lines = ["### lm-evaluation-harness", ""]
    head = "| task | metric | n | " + " | ".join(phases) + (" | Δ edited |" if "edited" in phases else " |")
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for task, t in tasks.items():
        for name, row in t["metrics"].items():
            se = (t.get("stderr") or {}).get(name) or {}
            cells = [num(row.get(p)) + (f" ± {num(se[p])}" if finite(se.get(p)) else "") for p in phases]
            d = f" {delta(row.get('base'), row.get('edited'))} |" if "edited" in phases else ""
            lines.append(
                f"| {escape_cell(task)} | {escape_cell(name)} | {t.get('n') or '–'} | "
                + " | ".join(cells)
                + f" |{d}"
            )
    shots = le.get("num_fewshot")
    lines += [
        "",
        f"Run with lm-evaluation-harness {le.get('lm_eval_version') or ''} (`lm_eval.simple_evaluate` on the "
        "in-memory model of each phase, the edit applied as it was evaluated above); "
        + ("each task's own few-shot setting" if shots is None else f"{shots}-shot")
        + (f", at most {le['limit']} documents per task" if le.get("limit") else "")
        + "; ± is lm-eval's standard error.",
        "",
    ]
    return lines


def comparisons(base: Mapping, edited: Mapping, comps: Mapping, report: Report) -> list[str]:
    """Alternative edits fitted in the same run (a variant the method fitted beside the edit), evaluated the same way."""
    lines: list[str] = []
    for name, comp in comps.items():
        m, c = comp.get("metrics") or {}, (comp.get("info") or {}).get("comparison") or {}
        known = known_metrics(report)
        keys = [k for k in metric_keys(known, base, edited, m) if k in m and k in edited]
        lines += [
            f"### Compared with {name}",
            "",
            report.comparison_note(c),
            "",
        ]
        if comp.get("generations") is False:
            lines += [
                "No responses were generated for it (`eval.comparison_generations: false`): no rule can pick it "
                "(the validation score already kept this edit), so only what needs no generation was measured.",
                "",
            ]
        lines += [
            f"| metric | base | this edit | {escape_cell(name)} |",
            "| --- | --- | --- | --- |",
        ]
        lines += [
            f"| {escape_cell(label(known, k))} | {num(base.get(k))} | {num(edited[k])} | {num(m[k])} |"
            for k in keys
        ]
        lines.append("")
    return lines
