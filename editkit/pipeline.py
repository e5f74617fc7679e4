"""apply_recipe: recipe → model → data → fit → evaluate → export → card → push, one direction.

Everything that can be checked is checked before the run directory is created (recipe, data, model,
anatomy), so bad input writes nothing. Every step is appended to ``events.jsonl``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from editkit import __version__
from editkit.anatomy import find_anatomy
from editkit.edit import Edit
from editkit.errors import EditkitError, RecipeError
from editkit.events import EventLog, NullEventLog, create_run_dir, prepare_run_dir
from editkit.methods import get_method
from editkit.methods.base import FitContext
from editkit.recipe import DataSource, Recipe, load_recipe

EXPORT_TOLERANCE = 1e-4


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    edit: Edit
    model_dir: Path | None
    push: dict | None = None


@dataclass
class LoadedData:
    roles: dict[str, Any] = field(default_factory=dict)  # for FitContext.data
    eval: Any = None  # EvalData


# ------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------


def _triplets(src: DataSource, split: str | None, field_name: str) -> list[dict]:
    from editkit.data.capabilities import load_triplets
    from editkit.errors import DataError

    try:
        ds = load_triplets(src.source, split=split or src.split, columns=src.columns or None, limit=src.limit)
    except DataError as e:
        raise DataError(f"{field_name}: {e}") from None
    return [dict(r) for r in ds]


def load_data(recipe: Recipe, method_needs: tuple[str, ...]) -> LoadedData:
    """Load every dataset the recipe names (before any model is loaded, so mistakes surface fast)."""
    from editkit.data.capabilities import BUILTIN_CAPABILITIES
    from editkit.data.general import load_general_text
    from editkit.errors import DataError
    from editkit.eval.blimp import default_blimp_dir, load_blimp
    from editkit.eval.suite import EvalData

    d, ev = recipe.data, recipe.eval
    out = LoadedData()
    target_test = None
    if d.target is not None:
        out.roles["target_train"] = _triplets(d.target, "train", "data.target")
        target_test = _triplets(d.target, "test", "data.target")
        if ev.max_items:
            target_test = target_test[: ev.max_items]
        out.roles["target_test"] = target_test
    if d.heldout == "auto":
        names = [n for n in BUILTIN_CAPABILITIES if d.target is None or n != d.target.source]
        heldout = {n: _triplets(DataSource(source=n), "test", "data.heldout") for n in names}
    else:
        heldout = {Path(s.source).stem: _triplets(s, s.split or "test", "data.heldout") for s in d.heldout}
    if ev.max_items:
        heldout = {k: v[: ev.max_items] for k, v in heldout.items()}
    out.roles["heldout"] = heldout
    try:
        g = d.general
        out.roles["general_train"] = list(
            load_general_text(g.source, split="train" if g.source == "builtin" else g.split, limit=g.limit)[
                "text"
            ]
        )
        general_test = list(
            load_general_text(g.source, split="test" if g.source == "builtin" else g.split, limit=g.limit)[
                "text"
            ]
        )
    except DataError as e:
        raise DataError(f"data.general: {e}") from None
    out.roles["general_test"] = general_test
    for name, src in d.sets.items():
        out.roles[name] = _load_set(src, f"data.sets.{name}")
    blimp = None
    if ev.blimp is not False:
        src = default_blimp_dir() if ev.blimp in ("auto", True) else Path(str(ev.blimp))
        if src is not None:
            if not Path(src).exists():
                raise DataError(f"eval.blimp: {src} does not exist")
            blimp = load_blimp(src, ev.blimp_per_phenomenon)
    drift = [" ".join(t.split()[:12]) for t in general_test[: ev.drift_prompts]]
    out.eval = EvalData(
        target_test=target_test, heldout=heldout, general_test=general_test, blimp=blimp, drift_prompts=drift
    )
    for role in method_needs:
        if role == "target" and d.target is None:
            raise RecipeError(
                f"data.target: method '{recipe.method.name}' needs target data (the capability to remove)"
            )
        if role.startswith("sets.") and role[5:] not in d.sets:
            raise RecipeError(f"data.{role}: method '{recipe.method.name}' needs this prompt set")
    return out


def _load_set(src: DataSource, field_name: str) -> list[dict]:
    """A named prompt set: any JSON/JSONL/CSV/parquet file or Hub dataset, through `datasets`."""
    from datasets import load_dataset

    from editkit.errors import DataError

    p = Path(src.source).expanduser()
    builders = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    try:
        if p.suffix.lower() in builders or p.exists():
            if not p.is_file():
                raise DataError(f"{field_name}: file {p} does not exist")
            if p.suffix.lower() not in builders:
                raise DataError(
                    f"{field_name}: {p}: unsupported file type (use .jsonl, .json, .csv or .parquet)"
                )
            ds = load_dataset(builders[p.suffix.lower()], data_files=str(p), split="train")
        else:
            ds = load_dataset(src.source, src.subset, split=src.split or "train")
    except DataError:
        raise
    except Exception as e:  # datasets raises many types
        raise DataError(
            f"{field_name}: could not load {src.source}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if src.columns:
        ds = ds.rename_columns({k: v for k, v in src.columns.items() if k in ds.column_names})
    if src.limit:
        ds = ds.select(range(min(src.limit, len(ds))))
    if len(ds) == 0:
        raise DataError(f"{field_name}: {src.source} is empty")
    return [dict(r) for r in ds]


# ------------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------------


def _check_conflicts(recipe: Recipe, push: bool) -> None:
    if push and not recipe.push.repo_id:
        raise RecipeError(
            "push.repo_id: --push needs a Hub repo id in the recipe (or --set push.repo_id=user/name)"
        )
    if recipe.export.adapter and recipe.method.name not in ("scalpel", "sft"):
        raise RecipeError(
            f"export.adapter: method '{recipe.method.name}' makes no adapter; set export.adapter: false"
        )


def prepare(recipe: Recipe, push: bool = False) -> tuple[type, LoadedData]:
    """Validation that needs no model: method, options, data. Raises EditkitError subclasses."""
    method_cls = get_method(recipe.method.name)
    _check_conflicts(recipe, push)
    return method_cls, load_data(recipe, method_cls.needs)


def apply_recipe(
    recipe: Recipe | str | Path,
    *,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    runs_root: str | Path = "runs",
    push: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    listener: Callable[[dict], None] | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> RunResult:
    """Run a recipe end to end. ``from editkit import apply_recipe; apply_recipe("recipes/x.yaml")``."""
    from editkit import distributed as dist
    from editkit.models import load_model

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise RecipeError("overrides: pass overrides with a recipe path, or edit the Recipe object")
    if dist.launched_distributed() and recipe.model.device_map:
        raise RecipeError(
            "model.device_map: spreading one model over devices and launching several processes do not mix; "
            "launch one process with device_map: auto, or several without it"
        )
    # under `accelerate launch` every process runs this; only the main one writes
    main = dist.is_main_process()
    if not main:
        listener, say = None, (lambda _m: None)
    run_dir = prepare_run_dir(
        Path(runs_root), recipe.name, Path(out) if out else None, resume=resume, overwrite=overwrite
    )
    run_dir = dist.broadcast_from_main(run_dir)  # the main process's (time-stamped) choice, for everyone
    if main:  # before the model loads: a run must not fail at its end for a reason known at its start
        from editkit.preflight import preflight

        preflight(recipe, run_dir, push)
    method_cls, data = prepare(recipe, push)
    torch.manual_seed(recipe.seed)
    say(f"loading model {recipe.model.id}")
    t_load = time.time()
    loaded = load_model(recipe.model, progress=say)
    anatomy = find_anatomy(loaded.model)
    method = method_cls()
    method.check(recipe.method, anatomy)
    load_seconds = time.time() - t_load

    # ---- from here on the run directory exists ----
    if main:
        if overwrite and run_dir.exists() and not resume:
            import shutil

            shutil.rmtree(run_dir)
        create_run_dir(run_dir, {"editkit_version": __version__, "recipe_hash": recipe.hash})
        (run_dir / "recipe.yaml").write_text(
            f"# resolved recipe, hash {recipe.hash}, editkit {__version__}\n" + recipe.to_yaml()
        )
    dist.wait_for_everyone()  # the run directory exists (and a resumed run's checkpoints are there) for all
    events = EventLog(run_dir / "events.jsonl", run_dir.name) if main else NullEventLog()
    if listener is not None:
        _orig_emit = events.emit

        def emit(type: str, **fields):
            ev = _orig_emit(type, **fields)
            listener(ev)
            return ev

        events.emit = emit  # type: ignore[method-assign]
    stages = ["load", "eval_base", "fit", "eval_edited"]
    if recipe.eval.control:
        stages.append("control")
    if recipe.eval.robustness and data.eval.target_test:
        stages.append("robustness")
    stages += ["export", "card"] + (["push"] if push else [])
    t0 = time.time()
    events.emit(
        "run_start",
        name=recipe.name,
        method=recipe.method.name,
        model=recipe.model.id,
        seed=recipe.seed,
        recipe_hash=recipe.hash,
        recipe=recipe.resolved(),
        editkit_version=__version__,
        pid=os.getpid(),
        stages=stages,
        resume=resume,
    )
    events.emit("stage_start", stage="load", total=None)
    events.emit("stage_end", stage="load", seconds=round(load_seconds, 3))
    events.log(
        f"anatomy: {anatomy.architecture}, {anatomy.n_layers} layers, {anatomy.n_heads} q / {anatomy.n_kv_heads} kv heads, head_dim {anatomy.head_dim}, MLP {anatomy.intermediate_size}"
    )
    stage = "setup"
    try:
        ctx = FitContext(
            model=loaded.model,
            tokenizer=loaded.tokenizer,
            anatomy=anatomy,
            params=recipe.method,
            data=data.roles,
            events=events,
            run_dir=run_dir,
            seed=recipe.seed,
            resume=resume,
            is_main=main,
            extras={"recipe": recipe, "loaded": loaded, "eval_data": data.eval},
        )
        metrics: dict[str, Any] = {
            "recipe_hash": recipe.hash,
            "editkit_version": __version__,
            "model": recipe.model.id,
            "method": recipe.method.name,
            "base_model": loaded.base_model,
            "license": loaded.license,
            "method_paper": method_cls.paper,
            "anatomy": anatomy.to_dict(),
        }
        stage = "eval_base"
        with events.stage("eval_base"):
            metrics["base"] = _evaluate(ctx, method, recipe, data, say, "base")
        events.emit("eval", phase="base", metrics=metrics["base"])
        _write_metrics(run_dir, metrics)

        stage = "fit"
        with events.stage("fit"):
            say("fitting")
            t_fit = time.time()
            edit = method.fit(ctx)
            metrics["fit_seconds"] = round(time.time() - t_fit, 2)
            if main:
                edit.save(run_dir / "edit")
        metrics["edit"] = {"method": edit.method, "modules": len(edit.modules), "info": edit.info}
        metrics["edit_norms"] = edit.delta_norms(loaded.model)

        stage = "eval_edited"
        with events.stage("eval_edited"):
            with edit.applied(loaded.model):
                metrics["edited"] = _evaluate(ctx, method, recipe, data, say, "edited")
            events.emit("eval", phase="edited", metrics=metrics["edited"])
            _write_metrics(run_dir, metrics)
            for name, other in method.comparisons(ctx, edit).items():  # e.g. plain abliteration beside SRA
                with other.applied(loaded.model):
                    m = _evaluate(ctx, method, recipe, data, say, name.replace(" ", "-"))
                metrics.setdefault("comparisons", {})[name] = {"metrics": m, "info": other.info}
                _write_metrics(run_dir, metrics)

        if recipe.eval.control:
            stage = "control"
            with events.stage("control"):
                control = method.control(ctx, edit)
                if control is not None:
                    with control.applied(loaded.model):
                        metrics["control"] = _evaluate(ctx, method, recipe, data, say, "control")
                    metrics["control_edit"] = control.info
                    events.emit("eval", phase="control", metrics=metrics["control"])
                else:
                    events.log("this method has no random control", level="warning")
            _write_metrics(run_dir, metrics)

        if "robustness" in stages:
            stage = "robustness"
            with events.stage("robustness"):
                from editkit.robustness_run import run_robustness

                metrics["robustness"] = run_robustness(ctx, edit, recipe, data, events)
            _write_metrics(run_dir, metrics)

        if not main:  # the other processes helped with the heavy parts; exporting is the main process's job
            dist.wait_for_everyone()
            return RunResult(run_dir=run_dir, metrics=metrics, edit=edit, model_dir=None, push=None)

        stage = "export"
        with events.stage("export"):
            say("exporting")
            metrics["export"] = export_run(ctx, edit, recipe, run_dir, loaded)
        events.emit("export", **metrics["export"])
        _write_metrics(run_dir, metrics)

        stage = "card"
        with events.stage("card"):
            from editkit.card import write_card

            write_card(run_dir)

        push_info = None
        if push:
            stage = "push"
            with events.stage("push"):
                from editkit.hub import push_run

                push_info = push_run(
                    run_dir,
                    recipe.push.repo_id,
                    private=recipe.push.private,
                    token_env=recipe.push.token_env,
                    force=recipe.push.force,
                )
            events.emit("push", **push_info)
            metrics["push"] = push_info
            _write_metrics(run_dir, metrics)
        metrics["total_seconds"] = round(time.time() - t0, 2)
        _write_metrics(run_dir, metrics)
        events.emit("run_end", status="ok", seconds=round(time.time() - t0, 3))
        dist.wait_for_everyone()
        return RunResult(
            run_dir=run_dir,
            metrics=metrics,
            edit=edit,
            model_dir=Path(metrics["export"]["path"]),
            push=push_info,
        )
    except KeyboardInterrupt:
        events.emit("run_end", status="interrupted", seconds=round(time.time() - t0, 3))
        raise
    except BaseException as e:
        from editkit.errors import scrub_secrets

        events.emit(
            "error",
            stage=stage,
            message=scrub_secrets(str(e).splitlines()[0] if str(e) else type(e).__name__),
            exc_type=type(e).__name__,
        )
        events.emit("run_end", status="error", seconds=round(time.time() - t0, 3))
        raise
    finally:
        events.close()


def _evaluate(ctx: FitContext, method, recipe: Recipe, data: LoadedData, say, phase: str) -> dict:
    from editkit.data.general import perplexity
    from editkit.eval.suite import evaluate

    m = evaluate(
        ctx.model,
        ctx.tokenizer,
        data.eval,
        batch_size=recipe.eval.batch_size,
        perplexity_fn=perplexity if recipe.eval.perplexity else None,
        progress=lambda s: say(f"{phase}: {s}"),
    )
    m.update(method.evaluate(ctx, phase))
    return m


def _write_metrics(run_dir: Path, metrics: dict) -> None:
    from editkit.distributed import is_main_process
    from editkit.events import _clean

    if not is_main_process():
        return

    tmp = run_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(_clean(metrics), indent=1))
    tmp.replace(run_dir / "metrics.json")


def export_run(ctx: FitContext, edit: Edit, recipe: Recipe, run_dir: Path, loaded) -> dict:
    """Merge the edit into the weights and export atomically; reload and compare logits."""
    from editkit.export import (
        embeddings_tied,
        export_model,
        logits_of,
        probe_inputs,
        verify_export,
        write_editkit_folder,
    )

    model, tok = ctx.model, ctx.tokenizer
    inputs = probe_inputs(tok)
    with edit.applied(model):
        reference = logits_of(model, inputs)
    tied_before = ctx.anatomy.tied_embeddings
    dest = Path(recipe.export.dir).expanduser() if recipe.export.dir else run_dir / "model"

    def extra(tmp: Path) -> None:
        run_info = {
            "editkit_version": __version__,
            "recipe_hash": recipe.hash,
            "method": recipe.method.name,
            "base_model": loaded.base_model,
            "license": loaded.license,
            "run_id": run_dir.name,
        }
        write_editkit_folder(tmp, edit, run_info, (run_dir / "recipe.yaml").read_text())
        if recipe.export.adapter and "adapter_dir" in ctx.extras:
            import shutil

            shutil.copytree(ctx.extras["adapter_dir"], tmp / "adapter")

    from editkit.streaming import decide_streaming, stream_export_run

    stream, why = decide_streaming(recipe.export.streaming, loaded)
    ctx.events.log(f"export: {'shard-streamed' if stream else 'in-memory'} merge ({why})")
    if stream:
        files = stream_export_run(
            edit, loaded, dest, recipe.export, extra=extra, trust_remote_code=recipe.model.trust_remote_code
        )["files"]
    else:
        edit.merge_into(model)
        files = export_model(
            model,
            tok,
            dest,
            dtype=recipe.export.dtype,
            max_shard_size=recipe.export.max_shard_size,
            extra=extra,
        )
    info: dict[str, Any] = {
        "path": str(dest),
        "dtype": recipe.export.dtype,
        "files": files,
        "streaming": stream,
    }
    if recipe.export.verify:
        diff = verify_export(dest, reference, inputs, like=model)
        info["max_abs_logit_diff"] = diff
        info["tied_embeddings"] = embeddings_tied(dest)
        exact = recipe.export.dtype in ("same", "float32") and next(model.parameters()).dtype == torch.float32
        info["tolerance"] = EXPORT_TOLERANCE if exact else None
        if exact and diff > EXPORT_TOLERANCE:
            raise EditkitError(
                f"export check failed: reloaded model differs from the edited model by {diff:.3g} > {EXPORT_TOLERANCE}"
            )
        if tied_before and not info["tied_embeddings"]:
            raise EditkitError(
                "export check failed: the input/output embeddings were tied and are not any more"
            )
    return info


def open_run(run_dir: str | Path):
    """Re-open a finished run: (recipe, data, loaded base model, anatomy, edit, FitContext). No events written."""
    import yaml

    from editkit.events import NullEventLog, is_run_dir
    from editkit.models import load_model

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise EditkitError(f"{run_dir}: not an editkit run directory")
    if not (run_dir / "edit" / "edit.json").exists():
        raise EditkitError(f"{run_dir}: the run has no edit artifact yet (edit/edit.json)")
    recipe = Recipe.model_validate(yaml.safe_load((run_dir / "recipe.yaml").read_text()))
    method_cls = get_method(recipe.method.name)
    data = load_data(recipe, method_cls.needs)
    loaded = load_model(recipe.model)
    anatomy = find_anatomy(loaded.model)
    edit = Edit.load(run_dir / "edit")
    ctx = FitContext(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        anatomy=anatomy,
        params=recipe.method,
        data=data.roles,
        events=NullEventLog(),
        run_dir=run_dir,
        seed=recipe.seed,
        extras={"recipe": recipe, "loaded": loaded, "eval_data": data.eval},
    )
    return recipe, data, loaded, anatomy, edit, ctx
