"""The recipe commands: `editkit apply` (run a recipe, with the stage progress or the monitor TUI),
`validate` (check recipes without a model), `recipes` (the packaged ones) and `init` (write a starting
recipe). Each imports what it runs inside the function, so `editkit --help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from editkit.cli.app import _fmt, app, err, fail, out
from editkit.cli.progress import _StageProgress
from editkit.errors import EditkitError, scrub_secrets


@app.command()
def apply(
    recipe: Path = typer.Argument(
        ..., help="recipe YAML file, or a packaged recipe's name (`editkit recipes`)", show_default=False
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        metavar="KEY=VALUE",
        help="override a recipe field, e.g. --set method.rank=4 (repeatable)",
    ),
    out_dir: Path = typer.Option(None, "--out", help="run directory (default runs/<name>-<timestamp>)"),
    push: bool = typer.Option(False, "--push", help="push the exported model to push.repo_id on the Hub"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing run in --out"),
    tui: bool = typer.Option(False, "--tui", help="watch the run live in the monitor TUI"),
    runs_root: Path = typer.Option(Path("runs"), "--runs", help="where new run directories go"),
    wait: bool = typer.Option(False, "--wait", help="if another editkit command holds the run, wait for it"),
) -> None:
    """Run a recipe: find the capability, remove it, evaluate, export (and push).

    Example:

        editkit apply recipes/remove_moral.yaml --set method.rank=4 --push
    """
    from editkit.run.pipeline import apply_recipe

    if resume and overwrite:
        fail(EditkitError("--resume and --overwrite contradict each other; pick one"))
    try:
        if tui:
            return _apply_with_tui(recipe, set_, out_dir, push, resume, overwrite, runs_root)
        from editkit.run.distributed import launch_rank

        kw = dict(
            overrides=set_,
            out=out_dir,
            runs_root=runs_root,
            push=push,
            resume=resume,
            overwrite=overwrite,
            wait=wait,
        )
        if launch_rank() != 0:  # a helper process of `accelerate launch`: compute, print nothing
            apply_recipe(recipe, **kw)
            return
        with _StageProgress(out) as prog:
            result = apply_recipe(recipe, listener=prog.on_event, notice=prog.say, **kw)
    except EditkitError as e:
        fail(e)
    except KeyboardInterrupt as e:
        from editkit.run.pipeline import RunTerminated

        terminated = isinstance(e, RunTerminated)
        err.print("terminated (SIGTERM); recorded as interrupted" if terminated else "interrupted")
        raise typer.Exit(143 if terminated else 130) from None
    _print_summary(result.metrics, result.run_dir)


def _apply_with_tui(recipe, set_, out_dir, push, resume, overwrite, runs_root) -> None:
    """Run the recipe in a child process and attach the monitor to its run directory."""
    import subprocess
    import time

    from editkit.run.events import prepare_run_dir
    from editkit.spec.recipe import load_recipe

    r = load_recipe(recipe, set_)
    run_dir = prepare_run_dir(runs_root, r.name, out_dir, resume=resume, overwrite=overwrite)
    cmd = [sys.executable, "-m", "editkit", "apply", str(recipe), "--out", str(run_dir)]
    for s in set_:
        cmd += ["--set", s]
    cmd += ["--push"] * push + ["--resume"] * resume + ["--overwrite"] * overwrite
    log = open(Path(runs_root).parent / f".{r.name}.apply.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if (run_dir / "events.jsonl").exists() or proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() not in (None, 0) and not (run_dir / "events.jsonl").exists():
        log.close()
        fail(EditkitError(Path(log.name).read_text().strip().splitlines()[-1]))
    from editkit_tui import run_monitor

    run_monitor(run_dir)
    out.print(f"monitor closed; the run continues in the background (pid {proc.pid}) → {run_dir}")


def _print_summary(metrics: dict, run_dir: Path) -> None:
    from rich.table import Table

    table = Table(title=f"{metrics.get('method')} on {metrics.get('model')}")
    table.add_column("metric")
    for col in ("base", "edited", "control"):
        if col in metrics:
            table.add_column(col, justify="right")
    keys = list(metrics.get("base", {}))
    for k in keys:
        row = [k] + [_fmt(metrics[c].get(k)) for c in ("base", "edited", "control") if c in metrics]
        table.add_row(*row)
    out.print(table)
    exp = metrics.get("export", {})
    if "max_abs_logit_diff" in exp:
        out.print(
            f"export check: max |Δlogit| = {exp['max_abs_logit_diff']:.2e} (reloaded with plain transformers)"
        )
    from editkit.run.events import resolve_recorded

    out.print(f"run: {run_dir}\nmodel: {resolve_recorded(run_dir, exp.get('path'))}")


@app.command()
def validate(
    recipes: list[Path] = typer.Argument(
        ..., help="recipe files or packaged recipe names", show_default=False
    ),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE", help="override a field before validating"
    ),
) -> None:
    """Check recipes without loading any model: the schema, the method, and every local path they name
    (model folder or .gguf file, data files, BLiMP folder). What needs the model itself is listed at the end.

    Example:

        editkit validate recipes/*.yaml
    """
    from editkit.methods import get_method
    from editkit.run.preflight import NEEDS_THE_MODEL, local_problems
    from editkit.spec.recipe import load_recipe

    bad = 0
    for path in recipes:
        try:
            r = load_recipe(path, set_)
            get_method(r.method.name)
        except EditkitError as e:
            err.print(f"[red]✗[/] {escape(scrub_secrets(str(e)))}", soft_wrap=True)
            bad += 1
            continue
        problems = local_problems(r)
        if problems:
            for p in problems:
                err.print(f"[red]✗[/] {escape(str(path))}: {escape(scrub_secrets(p))}", soft_wrap=True)
            bad += 1
            continue
        out.print(
            f"[green]✓[/] {escape(f'{path}: {r.name} ({r.method.name} on {r.model.id}), hash {r.hash}')}"
        )
    out.print(f"[dim]{NEEDS_THE_MODEL}[/]", soft_wrap=True)
    if bad:
        raise typer.Exit(2)


@app.command("recipes")
def recipes_() -> None:
    """List the recipes that ship with editkit (run one by name: editkit apply NAME).

    Example:

        editkit recipes
    """
    from editkit.spec.catalog import describe, packaged_recipes, recipes_dir

    known = packaged_recipes()
    if not known:
        fail(EditkitError("no packaged recipes found (is editkit installed completely?)"))
    width = max(map(len, known))
    for name, path in known.items():
        out.print(f"{name:<{width}}  {describe(path)}", markup=False)
    out.print(f"\n({recipes_dir()}; `editkit init METHOD` writes a new one)", markup=False)


@app.command()
def init(
    method: str = typer.Argument(..., help="scalpel, refusal, heads, neurons or sft", show_default=False),
    model: str = typer.Option(None, "--model", help="model id, folder or 'demo' (default: demo)"),
    dest: Path = typer.Option(None, "--out", help="file to write (default: METHOD.yaml here)"),
    force: bool = typer.Option(False, "--force", help="replace an existing file"),
) -> None:
    """Write a starting recipe for METHOD: every field with its default, each explained in a comment.

    Example:

        editkit init scalpel --model HuggingFaceTB/SmolLM2-135M-Instruct
    """
    from editkit.methods.reference import init_recipe_text

    dest = dest or Path(f"{method}.yaml")
    try:
        if dest.exists() and not force:
            raise EditkitError(f"{dest}: exists; pass --force to replace it or --out another file")
        text = init_recipe_text(method, model)
        tmp = dest.with_name(f".{dest.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(dest)
    except EditkitError as e:
        fail(e)
    except OSError as e:
        fail(EditkitError(f"{dest}: cannot write: {e.strerror}"))
    out.print(f"wrote {dest} (check: editkit validate {dest}; run: editkit apply {dest})", markup=False)
