"""`editkit monitor`: watch a run (or a runs/ folder) through its events.jsonl. Read-only by design.

This module holds the Textual `MonitorApp` (its stylesheet is ``styles.tcss`` next to this file), the rule
that decides whether a path is one run or a folder of runs (`resolve_target`) and `run_monitor`; the screens
are `editkit_tui.run_screen` and `editkit_tui.list_screen`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from editkit_tui.list_screen import RunListScreen
from editkit_tui.run_screen import RunScreen
from editkit_tui.tailer import EVENTS_FILE, find_runs, has_events_file
from editkit_tui.views import STALE_AFTER_S


class MonitorApp(App):
    """Entry point: a run directory opens the run screen, a runs/ directory the run list."""

    CSS_PATH = "styles.tcss"
    TITLE = "editkit monitor"
    BINDINGS = [Binding("q", "quit", "Quit")]

    def __init__(
        self,
        path: Path,
        follow: bool = True,
        *,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        stale_after: float = STALE_AFTER_S,
    ):
        super().__init__()
        self.path = Path(path)
        self.follow = follow
        self.poll_interval = poll_interval
        self.clock = clock
        self.stale_after = stale_after

    def get_default_screen(self) -> Screen:
        kind, target = resolve_target(self.path)
        if kind == "list":
            return RunListScreen(target)
        return RunScreen(target)


def resolve_target(path: Path) -> tuple[str, Path]:
    """("run", run_dir) or ("list", runs_dir).

    events.jsonl or a folder holding it → that run. A folder whose sub-folders hold runs, or any folder
    named `runs`, or one that has sub-folders → the list. Anything else (not created yet, empty) is taken
    as a run directory whose log has not appeared yet.
    """
    path = Path(path)
    if path.name == EVENTS_FILE and not path.is_dir():
        return "run", path.parent
    if has_events_file(path):
        return "run", path
    if path.is_dir():
        if find_runs(path) or path.name == "runs" or any(p.is_dir() for p in path.iterdir()):
            return "list", path
    return "run", path


def run_monitor(path: Path | str, follow: bool = True) -> None:
    """Run the monitor in the terminal until the user quits. It only reads the run's files."""
    MonitorApp(Path(path), follow=follow).run()
