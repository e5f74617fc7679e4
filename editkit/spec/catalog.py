"""The recipes that ship with editkit, found by name, and ``editkit init``'s commented starting recipe.

The repository's ``recipes/`` folder *is* the package data: the wheel installs it as ``editkit/recipes/``
(``setup.py`` maps it), a source checkout reads it in place. A path on disk always wins over a name.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from editkit.errors import RecipeError


def recipes_dir() -> Path | None:
    """Where the packaged recipes are: ``editkit/recipes`` when installed, ``<checkout>/recipes`` otherwise."""
    here = Path(__file__).resolve().parents[1]  # the editkit package
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
