"""Running the removal checks over the phases of a run, and storing them in ``metrics['checks']``.

Phase-major: every enabled check on the base model, then on the edited model, then on the random control,
each result stored as it comes (``after_phase`` writes metrics.json), the judges and the headline verdict
once all phases are in. A check that changes its model (``Check.mutates``: relearning, quantising) gets a
private copy with the phase's edit merged; the others see the shared model with the edit's hooks on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from editkit.eval.checks import CHECKS, CheckData, CheckSpec, merged_copy
from editkit.eval.checks.verdict import headline_verdict
from editkit.eval.phase_cache import PhaseCache, code_digest
from editkit.methods import get_method
from editkit.model.sizing import model_eval_batch_size
from editkit.run.context import open_run
from editkit.run.events import EventLog, StageCounter, read_metrics, write_metrics


def checks_units(enabled: Mapping[str, CheckSpec], data: CheckData, phases) -> int:
    return sum(
        CHECKS[n].units(data, spec) for n, spec in enabled.items() for p in phases if p in CHECKS[n].phases
    )


def run_checks(
    model,
    edits: Mapping[str, Any],
    data: CheckData,
    enabled: Mapping[str, CheckSpec],
    metrics: dict,
    *,
    on_units: Callable[[int], None] | None = None,
    say: Callable[[str], None] = lambda _m: None,
    after_phase: Callable[[], None] | None = None,
    models: Mapping[str, Any] | None = None,
    cache: PhaseCache | None = None,
    emit: Callable[..., None] | None = None,
) -> dict[str, Any]:
    """Run ``enabled`` checks on each phase of ``edits`` (phase → Edit, None for the base model) and fold
    them into ``metrics['checks']``; returns it. ``model`` must carry no hooks. ``models`` (phase → model)
    gives a phase its own model instead (``editkit eval --checks``: the base and an export, no edits);
    ``cache``: the base phase's results from an earlier run with the same weights, data and check settings;
    ``emit(type, **payload)``: for the monitor, a ``check`` event per judged check (and the headline verdict)
    and the check's own events (``Check.events``)."""
    store = metrics.setdefault("checks", {})
    for name, spec in enabled.items():
        store[name] = {"spec": spec.model_dump(mode="json"), "phases": {}, "seconds": {}}
    for phase, edit in edits.items():
        here = (models or {}).get(phase, model)
        for name, spec in enabled.items():
            check = CHECKS[name]
            if phase not in check.phases:
                continue
            say(f"checks: {name} ({phase})")
            t0 = time.time()
            if phase == "base" and cache is not None and models is None:
                store[name]["phases"][phase] = _cached_base(check, name, here, data, spec, on_units, cache)
            else:
                store[name]["phases"][phase] = _measure(check, phase, here, edit, data, spec, on_units)
            store[name]["seconds"][phase] = round(time.time() - t0, 2)
        if after_phase is not None:
            after_phase()
    judge_checks(metrics)
    for name in enabled if emit is not None else ():
        judged = store[name].get("judge") or {}
        emit(
            "check",
            check=name,
            title=CHECKS[name].title,
            passed=judged.get("pass"),
            summary=judged.get("summary"),
        )
        for payload in CHECKS[name].events(store[name]):
            emit("families", check=name, **payload)
    if emit is not None and store.get("verdict"):
        emit(
            "check",
            check="verdict",
            title="headline verdict",
            passed=store["verdict"]["removed"],
            summary=store["verdict"]["label"],
        )
    return store


def _measure(check, phase: str, model, edit, data: CheckData, spec: CheckSpec, on_units) -> dict:
    """One check on one phase: a private merged copy for a check that changes its model, else hooks."""
    if check.mutates:
        twin = merged_copy(model, edit)
        try:
            return check.run(phase, twin, data, spec, on_units=on_units).to_dict()
        finally:
            del twin
    with edit.applied(model) if edit is not None else nullcontext():
        return check.run(phase, model, data, spec, on_units=on_units).to_dict()


def _cached_base(check, name: str, model, data: CheckData, spec: CheckSpec, on_units, cache) -> dict:
    """The base phase of one check from the cache, or measured and stored."""
    inputs = {
        "spec": spec.model_dump(mode="json"),
        "code": code_digest(check),
        "target_test": data.target_test,
        "target_train": data.target_train,
        "heldout": data.heldout,
        "seed": data.seed,
        "batch_size": data.batch_size,
    }
    result, _, hit = cache.measured(
        f"check:{name}", inputs, lambda: (_measure(check, "base", model, None, data, spec, on_units), {})
    )
    if hit and on_units is not None:
        on_units(check.units(data, spec))
    return result


def judge_checks(metrics: dict) -> None:
    """(Re)compute every stored check's judgement and the headline verdict in ``metrics['checks']``."""
    store = metrics.get("checks") or {}
    for name, stored in store.items():
        if name in CHECKS and isinstance(stored, dict) and "phases" in stored:
            stored["judge"] = CHECKS[name].judge(stored["phases"], stored.get("spec") or {})
    verdict = headline_verdict(metrics)
    if verdict is not None:
        store["verdict"] = verdict


def check_data_of(recipe, data, tokenizer, batch_size: int) -> CheckData:
    return CheckData(
        tokenizer=tokenizer,
        target_test=list(data.eval.target_test or []),
        target_train=list(data.roles.get("target_train") or []),
        heldout=dict(data.eval.heldout or {}),
        seed=recipe.seed,
        batch_size=batch_size,
    )


def checks_wanted(recipe, data) -> bool:
    """The checks run on capability removals: a pairwise target, a method that removes (not one that
    installs a behaviour) and at least one check switched on."""
    spec = recipe.eval.checks
    installs = getattr(get_method(recipe.method.name).report, "installs", False)
    return bool(spec) and bool(spec.enabled()) and bool(data.eval.target_test) and not installs


def stage_checks(run) -> None:
    """The pipeline's ``checks`` stage: base, edited and (when evaluated) control, with progress."""
    recipe, ctx = run.recipe, run.ctx
    bs = recipe.eval.batch_size or model_eval_batch_size(ctx.model)
    data = check_data_of(recipe, run.data, ctx.tokenizer, bs)
    enabled = recipe.eval.checks.enabled()
    edits = {"base": None, "edited": run.edit}
    if getattr(run, "control", None) is not None:
        edits["control"] = run.control
    counter = StageCounter(run.events, "checks")
    counter.grow(checks_units(enabled, data, edits))
    run_checks(
        ctx.model,
        edits,
        data,
        enabled,
        run.metrics,
        on_units=counter.add,
        say=run.say,
        after_phase=lambda: run.main and _write(run),
        cache=getattr(run, "cache", None),
        emit=run.events.emit,
    )
    verdict = run.metrics["checks"].get("verdict")
    if verdict:
        run.events.log(f"removal checks: {verdict['label']}")


def _write(run) -> None:
    write_metrics(run.run_dir, run.metrics)


def rerun_check(run_dir: Path, name: str) -> dict | None:
    """Measure check ``name`` again on a stored run (its base model, then its edit; the recipe's options
    for it, or its defaults where the recipe switched it off) and store it in the run's metrics.json with
    the judgements and the verdict recomputed; None when the run has no target data to check."""
    recipe, data, loaded, _anatomy, edit, ctx = open_run(run_dir)
    cdata = check_data_of(
        recipe, data, ctx.tokenizer, recipe.eval.batch_size or model_eval_batch_size(ctx.model)
    )
    if not cdata.target_test:
        return None
    spec = recipe.eval.checks.enabled().get(name) if recipe.eval.checks else None
    spec = spec or CHECKS[name].spec_cls()
    edits = {"base": None, "edited": edit}
    events = EventLog(run_dir / "events.jsonl", run_dir.name)
    metrics = read_metrics(run_dir)
    try:
        with events.stage("checks"):
            counter = StageCounter(events, "checks")
            counter.grow(checks_units({name: spec}, cdata, edits))
            run_checks(
                loaded.model, edits, cdata, {name: spec}, metrics, on_units=counter.add, emit=events.emit
            )
    finally:
        events.close()
    write_metrics(run_dir, metrics)
    return metrics["checks"][name]
