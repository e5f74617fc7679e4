"""apply_recipe: recipe → model → data → fit → evaluate → export → card → push, one direction.

Everything that can be checked is checked before the run directory is created (recipe, data, model,
anatomy, the method's ``check``), so bad input writes nothing. Then the run is a list of stages
(``editkit.run.stages.STAGES``), each a small function of one ``Run`` state; the loop around them emits the
stage events, writes ``metrics.json`` after every stage, and records an error with the stage it happened in.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from editkit import __version__
from editkit.data.recipe_data import LoadedData, load_data
from editkit.edit.edit import Edit
from editkit.errors import RecipeError, scrub_secrets
from editkit.eval.lm_eval import check_lm_eval
from editkit.eval.phase_cache import phase_cache_of
from editkit.methods import get_method
from editkit.methods.base import Method
from editkit.model.anatomy import find_anatomy
from editkit.model.load import (
    PLANTED_MODELS,
    load_model,
    planted_model_dir,
    planted_model_missing,
)
from editkit.run import distributed as dist
from editkit.run.context import fit_context
from editkit.run.events import (
    LOCK,
    EventLog,
    NullEventLog,
    create_run_dir,
    prepare_run_dir,
    resolve_recorded,
    run_lock,
)
from editkit.run.preflight import preflight
from editkit.run.provenance import source_revision
from editkit.run.stages import STAGES, Run, Stage, write_metrics_of
from editkit.spec.catalog import resolve_recipe
from editkit.spec.recipe import Recipe, load_recipe


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    edit: Edit
    model_dir: Path | None
    push: dict | None = None


def _check_conflicts(recipe: Recipe, push: bool) -> None:
    if push and not recipe.push.repo_id:
        raise RecipeError(
            "push.repo_id: --push needs a Hub repo id in the recipe (or --set push.repo_id=user/name)"
        )
    method_cls = get_method(recipe.method.name)
    if recipe.export.adapter and not method_cls.makes_adapter:
        raise RecipeError(
            f"export.adapter: method '{recipe.method.name}' makes no adapter; set export.adapter: false"
        )
    if recipe.export.gguf:  # an unknown type, or a K-quant without llama.cpp installed: before any fitting
        from editkit.export.gguf_file import check_gguf_kinds

        check_gguf_kinds(recipe.export.gguf)
    check_lm_eval(recipe.eval.lm_eval)  # installed, every task known and its data loadable


def prepare(recipe: Recipe, push: bool = False) -> tuple[type[Method], LoadedData]:
    """Validation that needs no model: method, options, data. Raises EditkitError subclasses."""
    method_cls = get_method(recipe.method.name)
    _check_conflicts(recipe, push)
    data = load_data(recipe, method_cls.needs)
    method_cls().check_data(recipe.method, set(recipe.data.sets))
    return method_cls, data


# ------------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------------


def _resolve(recipe: Recipe | str | Path, overrides) -> Recipe:
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    elif overrides:
        raise RecipeError("overrides: pass overrides with a recipe path, or edit the Recipe object")
    if dist.launched_distributed() and recipe.model.device_map:
        raise RecipeError(
            "model.device_map: spreading one model over devices and launching several processes do not mix; "
            "launch one process with device_map: auto, or several without it"
        )
    return recipe


def _open_run_dir(
    recipe: Recipe,
    run_dir: Path,
    main: bool,
    resume: bool,
    overwrite: bool,
    auto_named: bool,
    lock: ExitStack,
) -> Path:
    """Create (or reopen) the run directory, holding its lock; returns it (an automatically named run may
    have moved to the next free name when another apply took the same one in the same second)."""
    if main:
        fresh = not run_dir.exists()
        if overwrite and not fresh and not resume:  # the lock (taken before the model loaded) stays
            for child in run_dir.iterdir():
                if child.name != LOCK:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        meta = {"editkit_version": __version__, "recipe_hash": recipe.hash}
        run_dir = create_run_dir(run_dir, meta, fresh=fresh, auto_named=auto_named)
        if fresh:
            lock.enter_context(run_lock(run_dir, "apply"))
        (run_dir / "recipe.yaml").write_text(
            f"# resolved recipe, hash {recipe.hash}, editkit {__version__}\n" + recipe.to_yaml()
        )
    run_dir = dist.broadcast_from_main(run_dir)
    dist.wait_for_everyone()  # the run directory exists (and a resumed run's checkpoints are there) for all
    return run_dir


def _start(run: Run, stages: list[Stage], load_seconds: float, resume: bool) -> None:
    recipe, an = run.recipe, run.anatomy
    run.events.emit(
        "run_start",
        name=recipe.name,
        method=recipe.method.name,
        model=recipe.model.id,
        seed=recipe.seed,
        recipe_hash=recipe.hash,
        recipe=recipe.resolved(),
        editkit_version=__version__,
        editkit_commit=source_revision().get("commit"),
        pid=os.getpid(),
        stages=["load"] + [s.name for s in stages],
        resume=resume,
    )
    run.events.emit("stage_start", stage="load", total=None)
    run.events.emit("stage_end", stage="load", seconds=round(load_seconds, 3))
    run.events.log(
        f"anatomy: {an.architecture}, {an.n_layers} layers, {an.n_heads} q / {an.n_kv_heads} kv heads, "
        f"head_dim {an.head_dim}, MLP {an.intermediate_size}"
    )
    run.metrics.update(
        {
            "recipe_hash": recipe.hash,
            "editkit_version": __version__,
            "model": recipe.model.id,
            "method": recipe.method.name,
            "base_model": run.loaded.base_model,
            "weights": run.loaded.weights,
            "editkit_revision": source_revision(),
            "license": run.loaded.license,
            "method_paper": type(run.method).paper,
            "anatomy": an.to_dict(),
        }
    )


def _run_stages(run: Run, stages: list[Stage]) -> None:
    """Run the stages in order, metrics written after each; ``run.current`` says where an error happened."""
    for stage in stages:
        if stage.main_only and not run.main:
            continue
        run.current = stage.name
        with run.events.stage(stage.name):
            stage.run(run)
        write_metrics_of(run)


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
    notice: Callable[[str], None] | None = None,
    wait: bool = False,
) -> RunResult:
    """Run a recipe end to end. ``from editkit import apply_recipe; apply_recipe("recipes/x.yaml")``.

    ``say`` gets every step's message; ``notice`` (default ``say``) only what a user must see before the
    run's events start: what the model loader downloads, how big, and where it is cached. The run
    directory is locked for the whole run: another command on it stops with one line (or, ``wait``,
    queues behind it)."""
    with ExitStack() as lock:
        return _apply(
            recipe, overrides, out, runs_root, push, resume, overwrite, listener, say, notice, wait, lock
        )


def _apply(recipe, overrides, out, runs_root, push, resume, overwrite, listener, say, notice, wait, lock):
    recipe = _resolve(recipe, overrides)
    main = (
        dist.is_main_process()
    )  # under `accelerate launch` every process runs this; only the main one writes
    if not main:
        listener, say, notice = None, (lambda _m: None), (lambda _m: None)
    notice = notice or say
    run_dir = prepare_run_dir(
        Path(runs_root), recipe.name, Path(out) if out else None, resume=resume, overwrite=overwrite
    )
    run_dir = dist.broadcast_from_main(run_dir)  # the main process's (time-stamped) choice, for everyone
    if main and run_dir.exists():  # --resume / --overwrite: hold the run before anything loads
        lock.enter_context(run_lock(run_dir, "apply", wait=wait, on_wait=notice))
    if main:  # before the model loads: a run must not fail at its end for a reason known at its start
        preflight(recipe, run_dir, push)
    method_cls, data = prepare(recipe, push)
    if main and planted_model_missing(recipe.model.id):
        _make_planted(recipe.model.id, runs_root, listener, say, notice)
    torch.manual_seed(recipe.seed)
    say(f"loading model {recipe.model.id}")
    t_load = time.time()
    loaded = load_model(recipe.model, progress=notice)
    anatomy = find_anatomy(loaded.model)
    method = method_cls()
    method.check(recipe.method, anatomy)
    for line in method.notes(recipe.method, anatomy):
        notice(line)
    if recipe.export.gguf:  # an unsupported architecture or tokenizer fails now, not after the fit
        from editkit.export.gguf_file import check_gguf_supported

        check_gguf_supported(loaded.model.config, loaded.tokenizer)
    load_seconds = time.time() - t_load

    # ---- from here on the run directory exists ----
    run_dir = _open_run_dir(recipe, run_dir, main, resume, overwrite, out is None, lock)
    events = EventLog(run_dir / "events.jsonl", run_dir.name, listener) if main else NullEventLog()
    ctx = fit_context(recipe, loaded, anatomy, data, run_dir, events=events, resume=resume, is_main=main)
    run = Run(recipe, run_dir, method, data, loaded, anatomy, ctx, events, push=push, main=main, say=say)
    run.cache = phase_cache_of(ctx, recipe, dist.rank_and_world()[1], events.log)
    stages = [s for s in STAGES if s.when(run)]
    t0 = time.time()
    _start(run, stages, load_seconds, resume)
    restore_sigterm = None
    try:
        restore_sigterm = _record_sigterm()
        _run_stages(run, stages)
        if main:
            run.metrics["total_seconds"] = round(time.time() - t0, 2)
            write_metrics_of(run)
            events.emit("run_end", status="ok", seconds=round(time.time() - t0, 3))
        dist.wait_for_everyone()
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (kill, a scheduler) through _record_sigterm
        extra = {"signal": "SIGTERM"} if isinstance(e, RunTerminated) else {}
        events.emit("run_end", status="interrupted", seconds=round(time.time() - t0, 3), **extra)
        raise
    except BaseException as e:
        message = scrub_secrets(str(e).splitlines()[0] if str(e) else type(e).__name__)
        events.emit("error", stage=run.current, message=message, exc_type=type(e).__name__)
        events.emit("run_end", status="error", seconds=round(time.time() - t0, 3))
        raise
    finally:
        if restore_sigterm is not None:
            restore_sigterm()
        events.close()
    model_dir = resolve_recorded(run_dir, run.metrics["export"]["path"]) if main else None
    return RunResult(
        run_dir=run_dir, metrics=run.metrics, edit=run.edit, model_dir=model_dir, push=run.push_info
    )


def _make_planted(name: str, runs_root, listener, say, notice) -> None:
    """Make a planted model (``editkit.model.load.PLANTED_MODELS``) with its packaged recipe, once, as a run
    of its own beside this one; its export is the model's folder."""
    plant = PLANTED_MODELS[name][0]
    dest = planted_model_dir(name)
    notice(f"model {name} is not made yet: making it once with the packaged recipe {plant} → {dest}")
    apply_recipe(
        resolve_recipe(plant),
        overrides=[f"export.dir={dest}"],
        runs_root=runs_root,
        listener=listener,
        say=say,
        notice=notice,
    )
    notice(f"made {name}; now the recipe itself")


class RunTerminated(KeyboardInterrupt):
    """SIGTERM during a run: handled like Ctrl-C, so the event log ends with run_end "interrupted"."""


def _record_sigterm() -> Callable[[], None] | None:
    """Turn SIGTERM into RunTerminated for the run's duration; returns the function that puts the previous
    handler back (None when signals cannot be handled here: not the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def on_sigterm(signum, frame):
        raise RunTerminated("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
