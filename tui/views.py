"""Derived views of a run for display: its status (running, stale, ...), a live watcher, compact numbers.

What the screens need beyond the folded `RunState`: `display_status` adds the questions that need a clock
or the OS (a run without run_end whose log went quiet and whose process is gone is stale), `RunWatcher`
pairs a tailer with the state folded from it and rebuilds that state when the log is replaced, and
`format_duration` / `format_value` write times and metrics the same way in every panel. No Textual import.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from editkit_tui.state import RunState
from editkit_tui.tailer import EVENTS_FILE, EventTailer

STALE_AFTER_S = 300.0
"""A run without run_end whose log has not changed for this long and whose pid is gone is stale."""


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists on this machine (signal 0 only probes, never signals)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def display_status(
    state: RunState, mtime: float | None, now: float, stale_after: float = STALE_AFTER_S
) -> str:
    """running / ok / error / interrupted / stale / waiting (no events yet)."""
    if state.ended:
        return state.status
    if state.errors:
        return "error"
    quiet = mtime is not None and now - mtime > stale_after
    if quiet and not pid_alive(state.pid):
        return "stale"
    if not state.started:
        return "waiting"
    return "running"


class RunWatcher:
    """A tailer plus the state folded from it; rebuilds from scratch if the file is replaced."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.tailer = EventTailer(self.run_dir / EVENTS_FILE)
        self.state = RunState(run_id=self.run_dir.name)

    def poll(self) -> bool:
        """Read new events; True if anything changed."""
        events = self.tailer.read_new()
        if self.tailer.restarted:
            self.state = RunState(run_id=self.run_dir.name)
        self.state.apply_all(events)
        return bool(events) or self.tailer.restarted

    def status(self, now: float, stale_after: float) -> str:
        return display_status(self.state, self.tailer.mtime, now, stale_after)


def format_duration(seconds: float | None) -> str:
    """Compact h/m/s: 5s, 2m05s, 1h02m."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def format_value(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    if math.isnan(x):
        return "nan"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{max(1, digits - 1)}e}"
    return f"{x:.{digits}f}"
