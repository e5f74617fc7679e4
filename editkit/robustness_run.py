"""The robustness stage of a run: the target metric on paraphrase families, before and after the edit."""

from __future__ import annotations

from typing import Any


def run_robustness(ctx, edit, recipe, data, events) -> dict[str, Any]:
    from editkit.robustness import build_families, robustness_report, score_families

    bs = recipe.eval.batch_size
    out: dict[str, Any] = {}
    sets = {"target": data.eval.target_test}
    heldout = data.eval.heldout
    if heldout:
        name = sorted(heldout)[0]
        sets[f"control:{name}"] = heldout[name]
    for label, items in sets.items():
        fams = build_families(items, families=recipe.eval.robustness_families, seed=recipe.seed)
        before = score_families(ctx.model, ctx.tokenizer, fams, batch_size=bs)
        with edit.applied(ctx.model):
            after = score_families(ctx.model, ctx.tokenizer, fams, batch_size=bs)
        report = robustness_report(before, after, {k: len(v) for k, v in fams.items()})
        out[label] = report
        events.emit(
            "robustness",
            capability=label,
            families=[
                {"family": f, "n": len(fams[f]), "before": before.get(f), "after": after.get(f)} for f in fams
            ],
        )
    return out
