"""The parts of a run's state: one stage, one heatmap, one robustness family, one log line.

Plain dataclasses that `editkit_tui.state.RunState` holds and its event handlers fill in; the only logic
here is what each part can say about itself (a stage's duration, fraction done and ETA from its own event
timestamps, a robustness family's before/after delta). No Textual import.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StageState:
    name: str
    status: str = "pending"  # pending, running, done, failed, interrupted
    done: int | None = None
    total: int | None = None
    start_ts: float | None = None
    last_ts: float | None = None
    seconds: float | None = None
    counts_steps: bool = False
    """The count comes from step events (a fit): a stage that ends early keeps the steps it ran."""

    @property
    def stopped_early(self) -> bool:
        return self.status == "done" and bool(self.total) and self.done is not None and self.done < self.total

    def duration(self, now: float | None = None) -> float | None:
        """Seconds the stage took (its stage_end), or has been running: to ``now`` when given, else to its
        latest event. None before it starts."""
        if self.seconds is not None:
            return self.seconds
        if self.start_ts is None:
            return None
        end = now if (now is not None and self.status == "running") else self.last_ts
        return max(0.0, (end if end is not None else self.start_ts) - self.start_ts)

    @property
    def fraction(self) -> float | None:
        if self.status == "done":
            return 1.0
        if self.total and self.done is not None:
            return max(0.0, min(1.0, self.done / self.total))
        return None

    def eta_seconds(self) -> float | None:
        """Remaining time of a running stage from its own event timestamps (rate since stage start)."""
        if self.status != "running" or not self.total or not self.done or self.start_ts is None:
            return None
        if self.last_ts is None or self.last_ts <= self.start_ts:
            return None
        rate = (self.last_ts - self.start_ts) / self.done
        return max(0.0, (self.total - self.done) * rate)


@dataclass
class Heatmap:
    name: str
    values: list[list[float | None]]
    xlabel: str = ""
    ylabel: str = ""
    title: str = ""
    xlabels: list[str] | None = None  # one name per column (e.g. q, k, v, o, gate, up, down)
    ylabels: list[str] | None = None  # one name per row


@dataclass
class RobustnessFamily:
    family: str
    n: int | None
    before: float | None
    after: float | None

    @property
    def delta(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before


@dataclass
class LogLine:
    ts: float | None
    level: str
    message: str
    stage: str | None = None
