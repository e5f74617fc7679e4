"""The stages of a run: the :class:`Run` state every stage reads and adds to, the stage functions (evaluate
the base model, fit, evaluate the edit and its comparisons, the random control, the removal checks, export,
card, push) and :data:`STAGES`, the list ``editkit.run.pipeline.apply_recipe`` runs them from, each with when it
applies and whether only the main process runs it. ``export_run`` (merge, export atomically, reload and
compare logits, GGUF files) and ``write_metrics_of`` live here as the stages' own helpers.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from editkit.data.general import perplexity
from editkit.data.recipe_data import LoadedData
from editkit.edit.edit import Edit
from editkit.eval.checks.run import checks_wanted, stage_checks
from editkit.eval.lm_eval import record_lm_eval_phase
from editkit.eval.parts import PARTS, Baseline
from editkit.eval.phase_cache import PhaseCache, code_digest
from editkit.eval.routing import phase_routing
from editkit.eval.suite import evaluate, evaluation_units
from editkit.export.streaming import decide_streaming, stream_export_run
from editkit.export.write import check_export, export_model, reference_logits, run_info, write_editkit_folder
from editkit.methods.base import FitContext, FitResult, Method
from editkit.model.anatomy import Anatomy
from editkit.model.load import LoadedModel
from editkit.model.sizing import model_eval_batch_size
from editkit.publish.card import write_card
from editkit.publish.hub import push_run
from editkit.run.events import EventLog, StageCounter, recorded_path, write_metrics
from editkit.spec.recipe import Recipe


@dataclass
class Run:
    """The state every stage reads and adds to (one object, passed down the list of stages)."""

    recipe: Recipe
    run_dir: Path
    method: Method
    data: LoadedData
    loaded: LoadedModel
    anatomy: Anatomy
    ctx: FitContext
    events: EventLog
    push: bool = False
    main: bool = True
    say: Callable[[str], None] = lambda _m: None
    metrics: dict[str, Any] = field(default_factory=dict)
    fit: FitResult | None = None
    push_info: dict | None = None
    control: Edit | None = None  # the random control edit, once the control stage made it
    current: str = "setup"  # the stage running now (named in the error event)
    #: what the base phase measured for the later ones (drift's base distribution); eval_base fills it
    baseline: Baseline = field(default_factory=Baseline)
    #: the base phase's measurements from earlier runs of the same weights (None: measure everything)
    cache: PhaseCache | None = None

    @property
    def edit(self) -> Edit:
        assert self.fit is not None, "the fit stage has not run"
        return self.fit.edit


def evaluate_phase(run: Run, phase: str, counter: StageCounter | None = None) -> dict:
    """The general suite and the method's own metrics, on the model as it is now (edit applied or not).

    ``counter`` (the stage's progress) grows by the rows this evaluation scores and counts them. What the
    suite's ``samples`` parts return (the greedy generations) goes to their own sections of ``run.metrics``."""
    recipe, ctx = run.recipe, run.ctx
    pf = perplexity  # the perplexity part measures only where eval.perplexity gave it texts
    if counter is not None:
        counter.grow(evaluation_units(run.data.eval, pf, phase) + run.method.evaluation_units(ctx))
    samples: dict[str, Any] = {}

    def suite() -> dict:
        return evaluate(
            ctx.model,
            ctx.tokenizer,
            run.data.eval,
            phase=phase,
            baseline=run.baseline,
            batch_size=recipe.eval.batch_size,
            perplexity_fn=pf,
            progress=lambda s: run.say(f"{phase}: {s}"),
            on_rows=counter.add if counter is not None else None,
            samples=samples,
        )

    m = _base_suite(run, suite, samples, counter) if phase == "base" and run.cache is not None else suite()
    for name, got in samples.items():
        run.metrics[name] = PARTS[name].fold(run.metrics.get(name), phase, got)
    ctx.on_units = counter.add if counter is not None else None
    try:
        own = run.method.evaluate(ctx, phase)
    finally:
        ctx.on_units = None
    clash = sorted(set(own) & set(m))
    if clash:  # the method's own metrics sit beside the suite's in one phase section: no key may be both
        raise RuntimeError(
            f"method {recipe.method.name!r}: evaluate() returned {clash}, which the suite measures"
        )
    m.update(own)
    if recipe.eval.lm_eval is not None and phase in ("base", "edited", "control"):
        run.say(f"{phase}: lm-eval {', '.join(recipe.eval.lm_eval.tasks)}")
        record_lm_eval_phase(run.metrics, phase, ctx.model, ctx.tokenizer, recipe, counter)
    if run.anatomy.is_moe and phase in ("base", "edited"):  # an edit that reroutes is a different edit
        routing = phase_routing(ctx.model, ctx.tokenizer, run.anatomy, ctx.data)
        run.metrics.setdefault("routing", {})[phase] = routing
    return m


def _base_suite(run: Run, suite: Callable[[], dict], samples: dict, counter: StageCounter | None) -> dict:
    """The base phase's suite from the cache (the drift baseline and the parts' samples with it), or measured
    and stored."""
    bs = run.recipe.eval.batch_size or model_eval_batch_size(run.ctx.model)
    inputs = {
        "data": asdict(run.data.eval),
        "batch_size": bs,
        "parts": {name: code_digest(part) for name, part in PARTS.items()},
    }

    def measure():
        m = suite()
        lp = run.baseline.first_token_logprobs
        return {"metrics": m, "samples": samples}, ({} if lp is None else {"first_token_logprobs": lp})

    got, tensors, hit = run.cache.measured("suite", inputs, measure)
    if hit:
        run.say("base: the evaluation suite from the cache")
        run.baseline.first_token_logprobs = tensors.get("first_token_logprobs")
        samples.update(got["samples"])
        if counter is not None:
            counter.add(evaluation_units(run.data.eval, perplexity, "base"))
    return got["metrics"]


def stage_eval_base(run: Run) -> None:
    counter = StageCounter(run.events, "eval_base")
    run.metrics["base"] = evaluate_phase(run, "base", counter)
    if "eval_cache" in run.ctx.baseline:  # what the base evaluation cache did (a hit, a new entry, off)
        run.metrics["base_eval_cache"] = run.ctx.baseline["eval_cache"]
    if run.cache is not None and run.cache.enabled:
        # what the base phase cache did, kind by kind: the cache's own dict; the checks add theirs
        run.metrics["base_phase_cache"] = run.cache.status
    run.events.emit("eval", phase="base", metrics=run.metrics["base"])


def stage_fit(run: Run) -> None:
    run.say("fitting")
    t_fit = time.time()
    run.fit = run.method.fit(run.ctx)
    run.metrics["fit_seconds"] = round(time.time() - t_fit, 2)
    edit = run.fit.edit
    if run.main:
        edit.save(run.run_dir / "edit")
    run.metrics["edit"] = {"method": edit.method, "modules": len(edit.modules), "info": edit.info}
    run.metrics["edit_norms"] = edit.delta_norms(run.loaded.model)


def stage_eval_edited(run: Run) -> None:
    counter = StageCounter(run.events, "eval_edited")
    with run.edit.applied(run.loaded.model):
        run.metrics["edited"] = evaluate_phase(run, "edited", counter)
    run.events.emit("eval", phase="edited", metrics=run.metrics["edited"])
    gen = run.recipe.eval.comparison_generations  # false: no rule picks a comparison, so no generations
    for name, other in run.fit.comparisons.items():  # variants fitted beside the edit
        write_metrics_of(run)
        if not gen:
            run.events.log(f"{name}: evaluated without generations (eval.comparison_generations: false)")
        run.ctx.eval_generations = gen
        try:
            with other.applied(run.loaded.model):
                m = evaluate_phase(run, name.replace(" ", "-"), counter)
        finally:
            run.ctx.eval_generations = True
        run.metrics.setdefault("comparisons", {})[name] = {
            "metrics": m,
            "info": other.info,
            "generations": gen,
        }


def stage_control(run: Run) -> None:
    control = run.method.control(run.ctx, run.edit)
    run.control = control
    if control is None:
        run.events.log("this method has no random control", level="warning")
        return
    with control.applied(run.loaded.model):
        run.metrics["control"] = evaluate_phase(run, "control", StageCounter(run.events, "control"))
    run.metrics["control_edit"] = control.info
    run.events.emit("eval", phase="control", metrics=run.metrics["control"])


def stage_export(run: Run) -> None:
    run.say("exporting")
    run.metrics["export"] = export_run(run)
    run.events.emit("export", **run.metrics["export"])


def stage_card(run: Run) -> None:
    write_card(run.run_dir)


def stage_push(run: Run) -> None:
    p = run.recipe.push
    run.push_info = push_run(run.run_dir, p.repo_id, private=p.private, token_env=p.token_env, force=p.force)
    run.events.emit("push", **run.push_info)
    run.metrics["push"] = run.push_info


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Run], None]
    #: whether the stage is part of this run
    when: Callable[[Run], bool] = lambda _r: True
    #: exporting and publishing are the main process's job (the others helped with the heavy parts)
    main_only: bool = False


STAGES: list[Stage] = [
    Stage("eval_base", stage_eval_base),
    Stage("fit", stage_fit),
    Stage("eval_edited", stage_eval_edited),
    Stage("control", stage_control, when=lambda r: r.recipe.eval.control),
    Stage("checks", stage_checks, when=lambda r: checks_wanted(r.recipe, r.data), main_only=True),
    Stage("export", stage_export, main_only=True),
    Stage("card", stage_card, main_only=True),
    Stage("push", stage_push, when=lambda r: r.push, main_only=True),
]


def write_metrics_of(run: Run) -> None:
    """The one place metrics.json is written during a run (main process only)."""
    if run.main:
        write_metrics(run.run_dir, run.metrics)


def export_run(run: Run) -> dict:
    """Merge the edit into the weights and export atomically; reload and compare logits."""
    recipe, edit, model, tok = run.recipe, run.edit, run.ctx.model, run.ctx.tokenizer
    inputs, reference = reference_logits(model, tok, edit)
    dest = Path(recipe.export.dir).expanduser() if recipe.export.dir else run.run_dir / "model"
    adapter_dir = run.fit.adapter_dir if recipe.export.adapter else None
    gguf_info: list[dict[str, Any]] = []

    def extra(tmp: Path) -> None:
        info = run_info(
            recipe, run.run_dir.name, run.loaded.base_model, run.loaded.license, weights=run.loaded.weights
        )
        write_editkit_folder(tmp, edit, info, (run.run_dir / "recipe.yaml").read_text())
        if adapter_dir is not None:
            shutil.copytree(adapter_dir, tmp / "adapter")
        if recipe.export.gguf:
            from editkit.export.gguf_file import write_ggufs

            gguf_info[:] = write_ggufs(tmp, recipe.export.gguf)

    stream, why = decide_streaming(recipe.export.streaming, run.loaded)
    run.events.log(f"export: {'shard-streamed' if stream else 'in-memory'} merge ({why})")
    if stream:
        trc = recipe.model.trust_remote_code
        files = stream_export_run(edit, run.loaded, dest, recipe.export, extra=extra, trust_remote_code=trc)
        files = files["files"]
    else:
        edit.merge_into(model)
        ex = recipe.export
        files = export_model(model, tok, dest, dtype=ex.dtype, max_shard_size=ex.max_shard_size, extra=extra)
    info: dict[str, Any] = {
        "path": recorded_path(run.run_dir, dest),  # relative to the run: the run can be moved or copied
        "dtype": recipe.export.dtype,
        "files": files,
        "streaming": stream,
    }
    if recipe.export.verify:
        info.update(
            check_export(
                dest,
                reference,
                inputs,
                model,
                recipe.export.dtype,
                run.anatomy.tied_embeddings,
                edit=edit if stream else None,  # a streamed export left the in-memory model unmerged
            )
        )
    if gguf_info:
        info["gguf"] = gguf_info
        if recipe.export.verify:
            from editkit.export.gguf_file import check_ggufs

            check_ggufs(dest, gguf_info)
    return info
