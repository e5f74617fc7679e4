"""The run screen of `editkit monitor`: one run's header, summary line and six panels, plus its card.

`RunScreen` polls a `RunWatcher` on a timer and redraws only the panels whose section of the state changed
(timeline, loss plot, metrics, heatmaps, robustness, log); the panels themselves are built by
`editkit_tui.render`. `LossPlot` is the loss panel's plotext widget and `CardScreen` shows the exported
model card. Read-only: nothing here writes to the run folder.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import (
    Footer,
    Header,
    MarkdownViewer,
    RichLog,
    Static,
    TabbedContent,
    TabPane,
)
from textual_plotext import PlotextPlot

from editkit_tui import render
from editkit_tui.state import RunState
from editkit_tui.views import RunWatcher, format_duration

PANELS = ["timeline", "loss", "metrics", "heatmap", "families", "log"]
MAX_PLOT_POINTS = 2000


class LossPlot(PlotextPlot):
    """Loss and each loss term against the step."""

    def draw(self, state: RunState) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss terms")
        plt.xlabel("step")
        for name, points in state.series.items():
            pts = [(x, y) for x, y in points if math.isfinite(y)]
            if len(pts) > MAX_PLOT_POINTS:
                stride = math.ceil(len(pts) / MAX_PLOT_POINTS)
                pts = pts[::stride] + [pts[-1]]
            if pts:
                plt.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker="braille")
        self.refresh()


class CardScreen(Screen):
    """The run's model card (model/README.md) in a Markdown viewer."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("q", "app.quit", "Quit")]

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(Text(str(self.path), style="dim"), id="card-path")
        yield MarkdownViewer(
            self.path.read_text(encoding="utf-8", errors="replace"), show_table_of_contents=False
        )
        yield Footer()


class RunScreen(Screen):
    """One run: header, summary line, and six panels fed by the event tailer."""

    BINDINGS = [
        Binding("1", "show_panel('timeline')", "Timeline"),
        Binding("2", "show_panel('loss')", "Loss"),
        Binding("3", "show_panel('metrics')", "Metrics"),
        Binding("4", "show_panel('heatmap')", "Heatmap"),
        Binding("5", "show_panel('families')", "Robust"),
        Binding("6", "show_panel('log')", "Log"),
        Binding("tab", "cycle_panel(1)", "Next", show=False, priority=True),
        Binding("shift+tab", "cycle_panel(-1)", "Prev", show=False, priority=True),
        Binding("f", "toggle_follow", "Follow"),
        Binding("c", "open_card", "Card"),
        Binding("escape", "back", "Runs"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, run_dir: Path, *, can_go_back: bool = False):
        super().__init__()
        self.watcher = RunWatcher(run_dir)
        self.can_go_back = can_go_back
        self._drawn: dict[str, int] = {}
        self._logs_written = 0
        self._timer: Timer | None = None

    @property
    def state(self) -> RunState:
        return self.watcher.state

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="run-top"):
            yield Static(id="run-header")
            yield Static(id="error-banner")
            yield Static(id="message")
            yield Static(id="summary")
        with TabbedContent(initial="timeline", id="panels"):
            with TabPane("1 Timeline", id="timeline"):
                with VerticalScroll():
                    yield Static(id="timeline-body")
            with TabPane("2 Loss", id="loss"):
                yield LossPlot(id="loss-plot")
                yield Static(id="loss-last")
            with TabPane("3 Metrics", id="metrics"):
                with VerticalScroll():
                    yield Static(id="metrics-body")
            with TabPane("4 Heatmap", id="heatmap"):
                with VerticalScroll():
                    yield Static(id="heatmap-body")
            with TabPane("5 Robustness", id="families"):
                with VerticalScroll():
                    yield Static(id="families-body")
            with TabPane("6 Log", id="log"):
                yield RichLog(id="log-body", wrap=True, markup=False, max_lines=5000)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.watcher.run_dir)
        self.refresh_from_file()
        self._timer = self.set_interval(
            self.app.poll_interval, self.refresh_from_file, pause=not self.app.follow
        )

    @property
    def following(self) -> bool:
        return self.app.follow

    # ----------------------------------------------------------------- data

    def refresh_from_file(self) -> None:
        """Poll the tailer and redraw the panels whose data changed (header always: elapsed ticks)."""
        restarted = self.watcher.poll() and self.watcher.tailer.restarted
        if restarted:
            self._drawn.clear()
            self._logs_written = 0
            self.query_one("#log-body", RichLog).clear()
        self._draw()

    def _changed(self, section: str) -> bool:
        rev = self.state.revision.get(section, 0)
        if self._drawn.get(section) == rev:
            return False
        self._drawn[section] = rev
        return True

    def _draw(self) -> None:
        state = self.state
        now = self.app.clock()
        status = self.watcher.status(now, self.app.stale_after)
        self.query_one("#run-header", Static).update(render.header_text(state, status, state.elapsed(now)))
        self.query_one("#summary", Static).update(render.summary_text(state, self.following))
        self._draw_message(status)
        self._draw_error(status)
        running = any(st.status == "running" for st in state.stages.values()) and status == "running"
        if self._changed("stages") or running:  # a running stage's time ticks with the clock
            self.query_one("#timeline-body", Static).update(render.timeline_table(state, now))
        if self._changed("loss"):
            self.query_one("#loss-plot", LossPlot).draw(state)
            last = Text()
            for name, pts in state.series.items():
                last.append(f"{name} ", style="dim")
                last.append(f"{render.format_value(pts[-1][1])}   ")
            self.query_one("#loss-last", Static).update(
                last if state.series else Text("no step events yet", style="dim")
            )
        if self._changed("metrics"):
            self.query_one("#metrics-body", Static).update(render.metrics_group(state))
        if self._changed("heatmap"):
            self.query_one("#heatmap-body", Static).update(render.heatmaps_group(state))
        if self._changed("families"):
            self.query_one("#families-body", Static).update(render.robustness_group(state))
        if state.n_logs > self._logs_written:
            log = self.query_one("#log-body", RichLog)
            new = min(state.n_logs - self._logs_written, len(state.logs))
            for line in list(state.logs)[len(state.logs) - new :]:
                log.write(render.log_line_text(line, state.first_ts))
            self._logs_written = state.n_logs

    def _draw_message(self, status: str) -> None:
        msg = self.query_one("#message", Static)
        tailer = self.watcher.tailer
        text = None
        if not tailer.exists:
            text = f"No events yet: {tailer.path} does not exist."
            if not self.watcher.run_dir.exists():
                text = f"No run here: {self.watcher.run_dir} does not exist."
        elif not self.state.started:
            text = f"No events yet: {tailer.path} is empty."
            if tailer.pending_bytes:
                text = f"Waiting for the first complete line of {tailer.path}."
        elif status == "stale":
            text = (
                f"Stale: no run_end, no new events for {format_duration(self.app.clock() - (tailer.mtime or 0))}"
                f" and process {self.state.pid or '?'} is not running."
            )
        unreadable = tailer.bad_lines
        if tailer.pending_bytes and status in ("ok", "error", "interrupted", "stale"):
            unreadable += 1  # a torn last line: its writer stopped (killed, disk full) mid-line
        if unreadable:
            note = (
                f"{unreadable} unreadable line{'s' if unreadable > 1 else ''} in {tailer.path.name} skipped"
            )
            text = f"{text} ({note})" if text else f"{note[0].upper()}{note[1:]}."
        msg.update(Text(text or "", style="bold yellow"))
        msg.display = bool(text)

    def _draw_error(self, status: str) -> None:
        banner = self.query_one("#error-banner", Static)
        message = self.state.error_message if status == "error" else None
        if status == "interrupted":
            banner.update(Text(" INTERRUPTED: the run was stopped before it finished ", style="bold"))
            banner.set_class(True, "interrupted")
            banner.display = True
            return
        banner.set_class(False, "interrupted")
        banner.display = message is not None
        if message is not None:
            banner.update(Text(f" RUN FAILED  {message}", style="bold"))

    # ----------------------------------------------------------------- actions

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        """Focus the new panel's scrollable body so arrow keys / PgUp / PgDn scroll it."""
        pane = event.pane
        target = next((w for w in pane.query("VerticalScroll, RichLog") if w.focusable), None)
        if target is not None:
            target.focus()

    def action_show_panel(self, panel: str) -> None:
        self.query_one("#panels", TabbedContent).active = panel

    def action_cycle_panel(self, delta: int) -> None:
        tabs = self.query_one("#panels", TabbedContent)
        i = PANELS.index(tabs.active) if tabs.active in PANELS else 0
        tabs.active = PANELS[(i + delta) % len(PANELS)]

    def action_toggle_follow(self) -> None:
        self.app.follow = not self.app.follow
        if self._timer is not None:
            if self.app.follow:
                self.refresh_from_file()
                self._timer.resume()
            else:
                self._timer.pause()
        self.query_one("#summary", Static).update(render.summary_text(self.state, self.following))
        self.notify("following the run" if self.following else "paused: not reading new events", timeout=2)

    def card_path(self) -> Path:
        """The card lives in the exported model folder (export event path), by default run_dir/model."""
        for ex in reversed(self.state.exports):
            p = ex.get("path")
            if isinstance(p, str) and p:
                cand = Path(p)
                if not cand.is_absolute():
                    cand = self.watcher.run_dir / cand
                if (cand / "README.md").is_file():
                    return cand / "README.md"
        return self.watcher.run_dir / "model" / "README.md"

    def action_open_card(self) -> None:
        path = self.card_path()
        if not path.is_file():
            self.notify(f"no card yet: {path} does not exist", severity="warning", timeout=3)
            return
        self.app.push_screen(CardScreen(path))

    def action_back(self) -> None:
        if self.can_go_back:
            self.app.pop_screen()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return self.can_go_back
        return True
