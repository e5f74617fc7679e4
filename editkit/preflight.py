"""Checks that need no model, run before the model is loaded: a long run must not fail at its end.

``apply`` with ``--push`` asks the Hub (read-only requests) whether the token can write the repo; every
run checks that the export destination can be written. Each failure is one ``EditkitError`` line.
"""

from __future__ import annotations

import os
from pathlib import Path

from editkit.errors import OutputError
from editkit.hub import check_push_access


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
