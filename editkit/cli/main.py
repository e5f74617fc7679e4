"""The `editkit` command line. Thin: every command calls the library.

User errors (bad recipe, missing file, unsupported model, ...) print one line and exit with code 2. The typer
app lives in ``editkit.cli.app``; the commands register on it from ``apply`` (apply, validate, recipes,
init), ``evaluate`` (eval) and ``runs`` (models, card, push, monitor, robustness, export), imported here in
that order, which is the order `editkit --help` lists them in.
"""

from __future__ import annotations

import sys

from editkit.cli import apply, evaluate, runs  # noqa: F401  (each registers its commands on app, in order)
from editkit.cli.app import app, err
from editkit.errors import EditkitError, scrub_secrets


def main() -> None:
    try:
        app()
    except EditkitError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {scrub_secrets(str(e))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
