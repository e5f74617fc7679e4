"""The rich progress display of `editkit apply`: one row per stage of the run, fed by the run's events
(the same stream the TUI reads), with a bar, a count, the elapsed time and an ETA for every stage that has a
total.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import TimeElapsedColumn
from rich.text import Text


class _StageTime(TimeElapsedColumn):
    """Elapsed time of a stage; for a stage recorded after the fact (``load`` is timed before the run
    directory exists) the ``seconds`` of its stage_end event, not the instant between its two events."""

    def render(self, task):
        secs = task.fields.get("seconds")
        if secs is None:
            return super().render(task)
        m, sec = divmod(int(round(secs)), 60)
        h, m = divmod(m, 60)
        return Text(f"{h}:{m:02d}:{sec:02d}", style="progress.elapsed")


class _StageProgress:
    """Rich progress for a run, fed by its events (the same stream the TUI reads).

    Every stage with a total (evaluation rows, fit steps) shows a bar, the count and an ETA. The display
    starts at the first event, so an error found before the run starts prints no empty progress line.
    """

    def __init__(self, console: Console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            _StageTime(),
            TextColumn("ETA", style="dim"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.started:
            self.progress.stop()

    def say(self, message: str) -> None:
        """Library messages (what is being downloaded, from where, how big) before the stages start."""
        if not self.started:
            self.progress.console.print(message, markup=False, highlight=False)

    def on_event(self, ev: dict) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        t, stage = ev.get("type"), ev.get("stage")
        if t == "stage_start":
            self.tasks[stage] = self.progress.add_task(stage, total=ev.get("total"), info="", seconds=None)
        elif t == "progress" and stage in self.tasks:
            self.progress.update(self.tasks[stage], completed=ev["done"], total=ev.get("total"))
        elif t == "step" and stage in self.tasks:
            info = f"loss {ev['loss']:.4f}" if isinstance(ev.get("loss"), (int, float)) else ""
            self.progress.update(self.tasks[stage], completed=ev["step"], total=ev.get("total"), info=info)
        elif t == "stage_end" and stage in self.tasks:
            task = self.progress.tasks[self.tasks[stage]]
            done, total = int(task.completed), task.total
            info = task.fields.get("info", "")
            if total and 0 < done < total:  # e.g. fit stopped early: say so, and show the steps it ran
                info = (info + "  " if info else "") + f"stopped early at {done}/{int(total)}"
                total = done
            self.progress.update(
                self.tasks[stage],
                total=total or 1,
                completed=total or 1,
                info=info,
                seconds=ev.get("seconds") if stage == "load" else None,
            )
        elif t == "log" and ev.get("level") in ("warning", "error"):
            self.progress.console.print(f"[yellow]{escape(str(ev['message']))}[/]")
