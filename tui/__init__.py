"""editkit TUI: `editkit monitor` — a Textual app that watches a run through its events.jsonl.

`editkit_tui.state` (event folding) has no Textual import; the app is imported lazily so `import editkit_tui.state`
stays cheap for the CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from editkit_tui.app import MonitorApp

__all__ = ["MonitorApp", "run_monitor"]


def run_monitor(path: Path | str, follow: bool = True) -> None:
    """Open the monitor on a run directory (or a runs/ directory) and block until the user quits."""
    from editkit_tui.app import run_monitor as _run

    _run(path, follow=follow)


def __getattr__(name: str):
    if name == "MonitorApp":
        from editkit_tui.app import MonitorApp

        return MonitorApp
    raise AttributeError(name)
