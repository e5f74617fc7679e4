"""`editkit eval`: the command around ``editkit.eval.any_model`` (which does the work): the row progress bar,
the metrics table, ``--json`` and ``--checks``. It imports ``editkit.eval.any_model`` inside the function, so
`editkit --help` loads no model code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from editkit.cli.app import _fmt, app, err, fail, out
from editkit.errors import EditkitError


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
    skip: list[str] = typer.Option(
        [],
        "--skip",
        help="leave out a part of the evaluation suite by name (repeatable), e.g. --skip blimp; an unknown name "
        "lists the parts (editkit.eval.parts.PARTS)",
    ),
    json_out: Path = typer.Option(None, "--json", help="also write the metrics to this JSON file"),
    checks: bool = typer.Option(
        False,
        "--checks",
        help="also run the removal checks (separation per answer frame, probe, relearning, 8-bit, specificity) "
        "against the base model, with the headline verdict (docs/checks.md)",
    ),
    base: str = typer.Option(
        None,
        "--base",
        help="the base model for --checks and --refusal (default: the model the export's recipe names)",
    ),
    refusal: bool = typer.Option(
        False,
        "--refusal",
        help="score refusal instead of the capability suite, as `editkit apply` scores its refusal edits: "
        "greedy responses to the built-in harmful and harmless test prompts (--max-items each, default 100) "
        "read by keyword markers and --judge, first-token KL against --base on the harmless ones, and the "
        "suite's parts that need no target on both (--skip applies); "
        "for any model (another tool's abliterated checkpoint too)",
    ),
    judge: str = typer.Option(
        "self",
        "--judge",
        help="--refusal: who reads the responses besides the markers: 'self' (the base model), 'markers' "
        "(markers only) or a chat model",
    ),
) -> None:
    """Evaluate a model (or a run's exported model) with the editkit suite.

    An editkit export scores the capability its run removed as the target (read from its editkit/run.json
    or embedded recipe) and leaves it out of the held-out sets and the general capability score; -c
    overrides that.

    Example:

        editkit eval runs/remove-moral-20261124-101500 -c moral

        editkit eval ./heretic-model --refusal --base qwen-coder-1.5b
    """
    if refusal:
        if checks:
            fail("--refusal and --checks: give one (the checks are for capability removals)")
        m = _eval_refusal(target, base, judge, max_items or 100, tuple(skip), seed)
        _print_eval(target, m, json_out, refusal=True)
        return
    m = _eval_capability(target, capability, max_items, tuple(skip), seed)
    if checks:
        m["checks"] = _eval_checks(target, base, capability, max_items, seed)
    _print_eval(target, m, json_out)


def _eval_capability(target: str, capability, max_items, skip: tuple, seed: int) -> dict:
    from editkit.eval.any_model import evaluate_target

    with _bar("eval", "scored rows") as on_rows:
        try:
            return evaluate_target(
                target,
                capability=capability,
                max_items=max_items,
                skip=skip,
                seed=seed,
                say=lambda msg: err.print(msg, markup=False),
                on_rows=on_rows,
            )
        except EditkitError as e:
            fail(e)


@contextmanager
def _bar(label: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A transient progress bar on stderr, started by the first ``(done, total)`` it is given."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(f"{unit}  ETA", style="dim"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = None

    def update(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(label, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if task is not None:
            bar.stop()


def _print_eval(target: str, m: dict, json_out: Path | None, refusal: bool = False) -> None:
    from rich.table import Table

    t = Table(title=f"editkit eval: {target}")
    t.add_column("metric")
    if refusal:  # the base beside the model
        t.add_column("base", justify="right")
        t.add_column("model", justify="right")
        for k, v in m["model"].items():
            t.add_row(k, _fmt(m["base"].get(k)), _fmt(v))
    else:
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


def _eval_refusal(
    target: str, base: str | None, judge: str, n: int, skip: tuple[str, ...], seed: int
) -> dict:
    """`editkit eval --refusal` with a progress bar of generated, judged and scored prompts."""
    from editkit.eval.any_model import refusal_target

    with _bar("refusal", "prompts") as on_units:
        try:
            return refusal_target(
                target,
                base=base,
                judge=judge,
                n=n,
                skip=skip,
                seed=seed,
                say=lambda msg: err.print(msg, markup=False),
                on_units=on_units,
            )
        except EditkitError as e:
            fail(e)


def _eval_checks(
    target: str, base: str | None, capability: str | None, max_items: int | None, seed: int
) -> dict:
    """`editkit eval --checks`: the removal checks against the base model (docs/checks.md)."""
    from editkit.eval.any_model import check_target

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
