"""The robustness stage of a run: the target metric on paraphrase families, before and after the edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editkit.errors import EditkitError
from editkit.eval.phase_cache import PhaseCache
from editkit.eval.robustness.families import build_families
from editkit.eval.robustness.report import removal_verdict, robustness_report, score_families
from editkit.model.sizing import model_eval_batch_size
from editkit.run.context import open_run
from editkit.run.events import EventLog, StageCounter, read_metrics, write_metrics


def run_robustness(ctx, edit, recipe, data, events, cache: PhaseCache | None = None) -> dict[str, Any]:
    """The target (and one held-out capability as a control) on paraphrase families, before and after;
    ``cache``: the base model's scores from an earlier run with the same weights and families."""
    bs = recipe.eval.batch_size or model_eval_batch_size(ctx.model)
    out: dict[str, Any] = {}
    sets = {"target": data.eval.target_test}
    heldout = data.eval.heldout
    if heldout:
        name = sorted(heldout)[0]
        sets[f"control:{name}"] = heldout[name]
    families = {
        label: build_families(
            items, families=recipe.eval.robustness_families, seed=recipe.seed, tokenizer=ctx.tokenizer
        )
        for label, items in sets.items()
    }
    counter = StageCounter(events, "robustness")
    # before and after, two scored answers per item
    counter.grow(sum(4 * len(v) for fams in families.values() for v in fams.values()))
    for label, fams in families.items():
        before = _before(ctx, label, fams, bs, counter, cache)
        with edit.applied(ctx.model):
            after = score_families(ctx.model, ctx.tokenizer, fams, batch_size=bs, on_batch=counter.add)
        report = robustness_report(
            before,
            after,
            {k: len(v) for k, v in fams.items()},
            min_headroom=recipe.eval.robustness_min_headroom,
        )
        out[label] = report
        events.emit(
            "robustness",
            capability=label,
            families=[
                {"family": f, "n": len(fams[f]), "before": before.get(f), "after": after.get(f)} for f in fams
            ],
        )
    if "target" in out:  # the rule behind the card's "removed" (editkit.eval.robustness.report.REMOVAL_RULE)
        out["target"]["verdict"] = removal_verdict({"robustness": out})
    return out


def _before(
    ctx, label: str, fams: dict, bs: int, counter: StageCounter, cache: PhaseCache | None
) -> dict[str, float]:
    def measure():
        return score_families(ctx.model, ctx.tokenizer, fams, batch_size=bs, on_batch=counter.add), {}

    if cache is None:
        return measure()[0]
    before, _, hit = cache.measured(f"robustness:{label}", {"families": fams, "batch_size": bs}, measure)
    if hit:
        counter.add(sum(2 * len(v) for v in fams.values()))
    return before


def robustness_for_run_dir(run_dir) -> dict[str, Any]:
    """`editkit robustness RUN_DIR`: recompute the robustness table and store it in metrics.json."""
    recipe, data, loaded, anatomy, edit, ctx = open_run(run_dir)
    if not data.eval.target_test:
        raise EditkitError(
            f"{run_dir}: the recipe has no data.target, so there is nothing to check on paraphrases"
        )
    run_dir = Path(run_dir)
    events = EventLog(run_dir / "events.jsonl", run_dir.name)
    try:
        with events.stage("robustness"):
            report = run_robustness(ctx, edit, recipe, data, events)
    finally:
        events.close()
    metrics = read_metrics(run_dir)
    metrics["robustness"] = report
    write_metrics(run_dir, metrics)
    return report
