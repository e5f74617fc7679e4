"""The run list of `editkit monitor`: every run under a runs/ folder, one row each; Enter opens one.

`RunListScreen` keeps one `RunWatcher` per run folder found, polls them on a timer (paused while a run
screen is on top) and updates each row's stage, progress, status and elapsed time in place; opening a row
pushes a `RunScreen` that can go back to the list.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Header, Static

from editkit_tui import render
from editkit_tui.run_screen import RunScreen
from editkit_tui.tailer import EVENTS_FILE, find_runs
from editkit_tui.views import RunWatcher, format_duration


class RunListScreen(Screen):
    """All runs under a runs/ folder; Enter opens one."""

    BINDINGS = [
        Binding("enter", "open_run", "Open", show=True),
        Binding("f", "toggle_follow", "Follow"),
        Binding("q", "app.quit", "Quit"),
    ]
    COLUMNS = ("run", "name", "method", "model", "stage", "progress", "status", "elapsed")

    def __init__(self, runs_dir: Path):
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.watchers: dict[str, RunWatcher] = {}
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="list-message")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.runs_dir)
        table = self.query_one("#runs", DataTable)
        for col in self.COLUMNS:
            table.add_column(col, key=col)
        self.refresh_runs()
        self._timer = self.set_interval(
            max(1.0, self.app.poll_interval), self.refresh_runs, pause=not self.app.follow
        )
        table.focus()

    def on_screen_resume(self) -> None:
        if self._timer is not None and self.app.follow:
            self._timer.resume()
        self.refresh_runs()

    def on_screen_suspend(self) -> None:
        if self._timer is not None:
            self._timer.pause()

    def row_cells(self, watcher: RunWatcher) -> list:
        s = watcher.state
        now = self.app.clock()
        status = watcher.status(now, self.app.stale_after)
        stage = s.stages.get(s.current_stage or "")
        n_planned = len(s.planned_stages) or len(s.stages)
        progress = f"{s.stages_done()}/{n_planned} stages" if n_planned else "—"
        if stage is not None and stage.status == "running" and stage.total:
            progress += f" · {stage.done or 0}/{stage.total}"
        return [
            watcher.run_dir.name,  # the run id: several runs of one recipe share a name
            s.name or "—",
            s.method or "—",
            s.model or "—",
            s.current_stage or "—",
            progress,
            render.status_text(status),
            format_duration(s.elapsed(now)),
        ]

    def refresh_runs(self) -> None:
        table = self.query_one("#runs", DataTable)
        for run_dir in find_runs(self.runs_dir):
            key = str(run_dir)
            if key not in self.watchers:
                self.watchers[key] = RunWatcher(run_dir)
                self.watchers[key].poll()
                table.add_row(*self.row_cells(self.watchers[key]), key=key)
                continue
            self.watchers[key].poll()
            for col, value in zip(self.COLUMNS, self.row_cells(self.watchers[key]), strict=True):
                table.update_cell(key, col, value)
        msg = self.query_one("#list-message", Static)
        if not self.watchers:
            where = self.runs_dir
            text = f"No runs in {where} (no sub-folder holds {EVENTS_FILE})."
            if not where.exists():
                text = f"{where} does not exist."
            msg.update(Text(text, style="bold yellow"))
        msg.display = not self.watchers

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_run(str(event.row_key.value))

    def action_open_run(self) -> None:
        table = self.query_one("#runs", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            self.open_run(str(key.value))

    def open_run(self, key: str) -> None:
        self.app.push_screen(RunScreen(Path(key), can_go_back=True))

    def action_toggle_follow(self) -> None:
        self.app.follow = not self.app.follow
        if self._timer is not None:
            (self._timer.resume if self.app.follow else self._timer.pause)()
        self.notify("following" if self.app.follow else "paused", timeout=2)
