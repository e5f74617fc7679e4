"""Checks that need no model, run before any model is loaded.

``apply`` with ``--push`` asks the Hub (read-only requests) whether the token can write the repo; every
run checks that the export destination can be written. ``editkit validate`` checks every local path a
recipe names (model folder or GGUF file, data files, BLiMP folder) and built-in set names
(:func:`local_problems`). Each failure is one ``EditkitError`` line.
"""

from __future__ import annotations

import os
from pathlib import Path

from editkit.data.capabilities import BUILTIN_CAPABILITIES, _looks_like_path, builtin_path
from editkit.data.general import _looks_like_path as general_looks_like_path
from editkit.errors import EditkitError, OutputError
from editkit.eval.parts import PARTS
from editkit.model.load import check_model_source
from editkit.publish.hub import check_push_access
from editkit.spec.inputs import DataSource
from editkit.spec.recipe import Recipe

NEEDS_THE_MODEL = (
    "not checked without loading the model: that its architecture is supported, that the method's "
    "indices (layers, heads, neurons) fit it, and that Hub models and datasets exist"
)

_DATA_SUFFIXES = {".jsonl", ".json", ".csv", ".parquet"}


def _local_file(src: DataSource, field: str, suffixes: set[str]) -> str | None:
    p = Path(src.source).expanduser()
    if not p.exists():
        return f"{field}: file {src.source} does not exist"
    if not p.is_file():
        return f"{field}: {src.source} is a directory, expected a {'/'.join(sorted(suffixes))} file"
    if p.suffix.lower() not in suffixes:
        return f"{field}: {src.source}: unsupported file type (use {', '.join(sorted(suffixes))})"
    return None


def _triplet_source(src: DataSource, field: str) -> str | None:
    if src.source in BUILTIN_CAPABILITIES:
        return None
    if _looks_like_path(src.source):
        return _local_file(src, field, _DATA_SUFFIXES)
    if "/" not in src.source:  # neither a file nor a Hub id: a built-in name with a typo
        try:
            builtin_path(src.source)
        except EditkitError as e:
            return f"{field}: {e}"
    return None


def local_problems(recipe: Recipe) -> list[str]:
    """One line per local path (or built-in name) in the recipe that cannot work."""
    out: list[str] = []
    try:
        check_model_source(recipe.model)
    except EditkitError as e:
        out.append(str(e))
    d = recipe.data
    if d.target is not None:
        out.append(_triplet_source(d.target, "data.target"))
    if isinstance(d.heldout, list):
        out += [_triplet_source(s, f"data.heldout[{i}]") for i, s in enumerate(d.heldout)]
    if d.general.source != "builtin" and general_looks_like_path(d.general.source):
        out.append(_local_file(d.general, "data.general", _DATA_SUFFIXES | {".txt"}))
    for name, src in d.sets.items():
        p = Path(src.source).expanduser()
        if p.suffix.lower() in _DATA_SUFFIXES or p.exists() or src.source.startswith((".", "/", "~")):
            out.append(_local_file(src, f"data.sets.{name}", _DATA_SUFFIXES))
    for part in PARTS.values():
        out += part.preflight(recipe.eval)
    return [p for p in out if p]


def export_destination(recipe, run_dir: Path) -> Path:
    return Path(recipe.export.dir).expanduser() if recipe.export.dir else Path(run_dir) / "model"


def check_writable_destination(dest: Path, field: str = "export.dir") -> None:
    """``dest`` can be created (or replaced) by this user, and replacing it destroys nothing foreign."""
    dest = Path(dest)
    if dest.exists():
        if not dest.is_dir():
            raise OutputError(f"{field}: {dest} exists and is not a folder")
        if any(dest.iterdir()) and not (dest / "editkit" / "run.json").exists():
            raise OutputError(
                f"{field}: {dest} exists, is not empty and is not an editkit export; "
                "the export replaces its destination, so choose another folder"
            )
    parent = dest.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{field}: cannot create {dest}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{field}: cannot write {dest}: no write permission in {parent}")


def preflight(recipe, run_dir: Path, push: bool) -> None:
    """Everything checkable before the model loads (recipe conflicts are checked by ``prepare``)."""
    check_writable_destination(export_destination(recipe, run_dir))
    if push and recipe.push.repo_id:
        check_push_access(
            recipe.push.repo_id,
            private=recipe.push.private,
            token_env=recipe.push.token_env,
            force=recipe.push.force,
        )
