"""The recipes that ship with editkit, found by name, and ``editkit init``'s commented starting recipe.

The repository's ``recipes/`` folder *is* the package data: the wheel installs it as ``editkit/recipes/``
(``setup.py`` maps it), a source checkout reads it in place. A path on disk always wins over a name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from editkit.errors import RecipeError


def recipes_dir() -> Path | None:
    """Where the packaged recipes are: ``editkit/recipes`` when installed, ``<checkout>/recipes`` otherwise."""
    here = Path(__file__).resolve().parent
    for d in (here / "recipes", here.parent / "recipes"):
        if d.is_dir() and any(d.glob("*.yaml")):
            return d
    return None


def packaged_recipes() -> dict[str, Path]:
    """name (file stem) → path, sorted by name."""
    d = recipes_dir()
    return {p.stem: p for p in sorted(d.glob("*.yaml"))} if d else {}


def describe(path: Path) -> str:
    """One line: the recipe's ``description`` field, else the first sentence of its leading comment."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        data = {}
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        line = data["description"]
    else:
        comment = []
        for raw in text.splitlines():
            if not raw.startswith("#"):
                break
            body = raw.lstrip("#").strip()
            if not body or body.startswith(("flock", "editkit ", ".venv")):
                break
            comment.append(body)
        line = " ".join(comment)
    line = re.split(r"(?<=\.)\s", " ".join(line.split()), maxsplit=1)[0].rstrip(".")
    return line if len(line) <= 110 else line[:107].rstrip() + "..."


def resolve_recipe(arg: str | Path) -> Path:
    """A recipe argument → a file: the path if it exists, else a packaged recipe by name
    (``remove_moral``, ``remove-moral``, ``remove_moral.yaml`` or ``recipes/remove_moral.yaml``)."""
    p = Path(arg).expanduser()
    if p.exists():
        return p
    known = packaged_recipes()
    stem = p.name[: -len(".yaml")] if p.name.endswith(".yaml") else p.name
    bare = len(p.parts) == 1 or (len(p.parts) == 2 and p.parts[0] == "recipes")
    for cand in (stem, stem.replace("-", "_")):
        if bare and cand in known:
            return known[cand]
    names = ", ".join(known) or "none found"
    raise RecipeError(
        f"{arg}: no such recipe file, and no packaged recipe of that name (packaged: {names}; `editkit recipes`)"
    )


# ------------------------------------------------------------------------------------------------------
# editkit init
# ------------------------------------------------------------------------------------------------------


def _flow(value: Any) -> str:
    if value is None:
        return "null"
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=10**6)
    text = text.strip()
    return text[: -len("\n...")].strip() if text.endswith("...") else text


def _block(model_cls: type[BaseModel], values: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key, value in values.items():
        field = model_cls.model_fields.get(key)
        desc = " ".join((field.description or "").split()) if field is not None else ""
        if desc:
            lines.append(f"{indent}# {desc}")
        lines.append(f"{indent}{key}: {_flow(value)}")
    return lines


def init_recipe_text(method: str, model: str | None = None) -> str:
    """A recipe for ``method`` listing every field with its default and its description as a comment.

    The data block comes from the first packaged recipe using the method (so the method has what it
    needs), else a built-in capability as the target."""
    from editkit.methods import get_method
    from editkit.recipe import Recipe, parse_recipe

    try:
        method_cls = get_method(method)
    except ValueError as e:
        raise RecipeError(f"method: {e}") from None
    data: dict[str, Any] = {"target": "moral"}
    example = None
    for path in packaged_recipes().values():
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        m = raw.get("method")
        if (m.get("name") if isinstance(m, dict) else m) == method:
            data, example = raw.get("data") or {}, path.name
            break
    base = {
        "name": f"my-{method}",
        "model": {"id": model or "demo"},
        "method": {"name": method},
        "data": data,
    }
    recipe = Recipe.model_validate(base)
    resolved = recipe.resolved()
    paper = getattr(method_cls, "paper", None)
    lines = [
        f"# editkit recipe for method '{method}'" + (f" ({paper})" if paper else "") + ".",
        "# Written by `editkit init`: every field is listed with its default; delete what you do not change.",
        "# Check it with `editkit validate FILE`, run it with `editkit apply FILE`.",
    ]
    if example:
        lines.append(f"# The data block is the one of the packaged recipe {example} (`editkit recipes`).")
    for key, value in resolved.items():
        field = Recipe.model_fields[key]
        if key == "method":
            sub = type(recipe.method)
        else:
            sub = field.annotation if isinstance(field.annotation, type) else None
            sub = sub if sub is not None and issubclass(sub, BaseModel) else None
        desc = " ".join((field.description or "").split())
        lines.append("")
        if desc:
            lines.append(f"# {desc}")
        if sub is not None and isinstance(value, dict):
            lines.append(f"{key}:")
            if key == "method":  # name first, then the parameters
                value = {"name": value.pop("name"), **value}
            lines += _block(sub, value, "  ")
        else:
            lines.append(f"{key}: {_flow(value)}")
    text = "\n".join(lines) + "\n"
    parse_recipe(text, "<editkit init>")  # what we write must validate
    return text
