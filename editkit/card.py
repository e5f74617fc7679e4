"""The ablation card: the exported model's README.md (Hugging Face model-card front matter + body)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from editkit import __version__
from editkit.errors import OutputError
from editkit.events import is_run_dir


def _load_run(run_dir: Path) -> tuple[dict, dict]:
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise OutputError(f"{run_dir}: not an editkit run directory")
    mpath = run_dir / "metrics.json"
    if not mpath.exists():
        raise OutputError(f"{run_dir}: has no metrics.json (the run did not get far enough)")
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    return recipe, json.loads(mpath.read_text())


def render_card(recipe: dict, metrics: dict) -> str:
    method = recipe["method"]["name"]
    target = (recipe.get("data", {}).get("target") or {}).get("source")
    front = {
        "library_name": "transformers",
        "tags": ["editkit", "capability-ablation", method] + ([target] if target else []),
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {recipe['name']}", ""]
    lines.append(
        f"Made with editkit {__version__}, method `{method}`, recipe hash `{metrics.get('recipe_hash')}`."
    )
    lines += ["", "| metric | base | edited | control |", "| --- | --- | --- | --- |"]
    for k, v in metrics.get("base", {}).items():
        e = metrics.get("edited", {}).get(k)
        c = metrics.get("control", {}).get(k)
        lines.append(f"| {k} | {_f(v)} | {_f(e)} | {_f(c)} |")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


def write_card(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    recipe, metrics = _load_run(run_dir)
    model_dir = Path(metrics.get("export", {}).get("path") or run_dir / "model")
    if not model_dir.is_dir():
        raise OutputError(f"{run_dir}: has no exported model folder ({model_dir})")
    text = render_card(recipe, metrics)
    tmp = model_dir / ".README.md.tmp"
    tmp.write_text(text)
    tmp.replace(model_dir / "README.md")
    return model_dir / "README.md"
