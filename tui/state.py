"""Pure event folding for the monitor: events.jsonl → RunState.

No Textual import here, so the logic is unit-testable and the CLI can reuse it (e.g. a one-line status).
Everything is computed from event timestamps, except "how long ago" questions (elapsed of a running run,
staleness), which take an explicit `now` so callers and tests control the clock.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
STALE_AFTER_S = 300.0
"""A run without run_end whose log has not changed for this long and whose pid is gone is stale."""
MAX_LOG_LINES = 2000
ENDED_STATUSES = ("ok", "error", "interrupted")


# --------------------------------------------------------------------------- reading


class EventTailer:
    """Incremental reader of an append-only JSONL file.

    Reads only the bytes added since the last call and keeps an incomplete last line buffered until its
    newline arrives, so a line being written is never parsed half-way. If the file shrinks or is replaced
    (new inode), it starts over and sets `restarted` so the caller can rebuild its state.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self._pending = b""
        self._inode: int | None = None
        self.bad_lines = 0
        self.restarted = False
        self.exists = False
        self.mtime: float | None = None

    def read_new(self) -> list[dict[str, Any]]:
        """Return the complete events appended since the last call (never raises on bad content)."""
        self.restarted = False
        try:
            st = os.stat(self.path)
        except OSError:
            self.exists = False
            self.mtime = None
            return []
        self.exists = True
        self.mtime = st.st_mtime
        if (self._inode is not None and st.st_ino != self._inode) or st.st_size < self.offset:
            self.offset, self._pending, self.bad_lines = 0, b"", 0
            self.restarted = True
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(st.st_size - self.offset)
        except OSError:
            return []
        self.offset += len(chunk)
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        events = []
        for raw in lines:
            event = self._parse(raw)
            if event is not None:
                events.append(event)
        return events

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete last line waiting for its newline."""
        return len(self._pending)

    def _parse(self, raw: bytes) -> dict[str, Any] | None:
        raw = raw.strip()
        if not raw:
            return None
        try:
            event = json.loads(raw.decode("utf-8", errors="replace"))
        except ValueError:
            self.bad_lines += 1
            return None
        if not isinstance(event, dict):
            self.bad_lines += 1
            return None
        return event


# --------------------------------------------------------------------------- state


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


@dataclass
class RunState:
    """Everything the monitor shows about one run, folded from its events in order."""

    run_id: str = ""
    name: str = ""
    method: str = ""
    model: str = ""
    seed: Any = None
    recipe_hash: str = ""
    editkit_version: str = ""
    pid: int | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    planned_stages: list[str] = field(default_factory=list)
    stages: dict[str, StageState] = field(default_factory=dict)
    current_stage: str | None = None
    step: int | None = None
    step_total: int | None = None
    step_stage: str | None = None
    loss: float | None = None
    lr: float | None = None
    step_metrics: dict[str, float] = field(default_factory=dict)
    n_steps: int = 0
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    heatmaps: dict[str, Heatmap] = field(default_factory=dict)
    robustness: dict[str, list[RobustnessFamily]] = field(default_factory=dict)
    exports: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    logs: deque[LogLine] = field(default_factory=lambda: deque(maxlen=MAX_LOG_LINES))
    n_logs: int = 0
    errors: list[LogLine] = field(default_factory=list)
    status: str = "running"  # running, ok, error, interrupted (stale is decided by display_status)
    end_seconds: float | None = None
    first_ts: float | None = None
    run_start_ts: float | None = None
    """ts of the latest run_start (a resumed run has several; elapsed counts from the latest)."""
    last_ts: float | None = None
    n_events: int = 0
    n_unknown: int = 0
    n_malformed: int = 0
    revision: dict[str, int] = field(default_factory=dict)
    """Per-section change counters (header, stages, loss, metrics, heatmap, robustness, log) so a UI
    redraws only what changed."""

    # ----------------------------------------------------------------- folding

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event in. Unknown types are counted and ignored; malformed fields never raise."""
        self.n_events += 1
        ts = _num(event.get("ts"))
        if ts is not None:
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        handler = _HANDLERS.get(str(event.get("type")))
        if handler is None:
            self.n_unknown += 1
            return
        try:
            handler(self, event, ts)
        except (TypeError, ValueError, AttributeError, KeyError):
            self.n_malformed += 1

    def apply_all(self, events: list[dict[str, Any]]) -> RunState:
        for event in events:
            self.apply(event)
        return self

    def _touch(self, *sections: str) -> None:
        for s in sections:
            self.revision[s] = self.revision.get(s, 0) + 1

    def _stage(self, name: Any) -> StageState:
        name = str(name) if name is not None else "?"
        if name not in self.stages:
            self.stages[name] = StageState(name)
        return self.stages[name]

    # ----------------------------------------------------------------- derived

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def started(self) -> bool:
        return self.n_events > 0

    def ordered_stages(self) -> list[StageState]:
        """Planned stages in plan order, then any unplanned ones in the order they started."""
        names = list(self.planned_stages) + [s for s in self.stages if s not in self.planned_stages]
        return [self.stages.get(n) or StageState(n) for n in names]

    def stages_done(self) -> int:
        return sum(1 for s in self.stages.values() if s.status == "done")

    def elapsed(self, now: float | None = None) -> float | None:
        """Wall time of the run: from run_end when ended, else to `now` (or the last event if no clock)."""
        if self.end_seconds is not None and self.ended:
            return self.end_seconds
        start = self.run_start_ts if self.run_start_ts is not None else self.first_ts
        if start is None:
            return None
        if self.ended or self.errors or now is None:
            return max(0.0, (self.last_ts or start) - start)
        return max(0.0, now - start)

    def eta_seconds(self) -> float | None:
        stage = self.stages.get(self.current_stage or "")
        return stage.eta_seconds() if stage else None

    @property
    def error_message(self) -> str | None:
        if self.errors:
            e = self.errors[-1]
            return f"{e.stage or '?'}: {e.message}" if e.stage else e.message
        if self.status == "error":
            return "run ended with status error"
        return None


# --------------------------------------------------------------------------- handlers


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return float(x)
    if isinstance(x, (int, float)):
        return float(x)  # nan/inf kept: a diverging loss must show as such
    return None


def _int(x: Any) -> int | None:
    v = _num(x)
    return int(v) if v is not None and math.isfinite(v) else None


def _on_run_start(s: RunState, e: dict, ts: float | None) -> None:
    if s.run_start_ts is not None:
        # a resumed run appends a new attempt to the same log: it is running again; finished stages stay
        s.status, s.end_seconds, s.errors = "running", None, []
        for st in s.stages.values():
            if st.status != "done":
                st.status = "pending"
    s.run_start_ts = ts
    s.run_id = str(e.get("run_id") or s.run_id)
    s.name = str(e.get("name") or "")
    s.method = str(e.get("method") or "")
    s.model = str(e.get("model") or "")
    s.seed = e.get("seed")
    s.recipe_hash = str(e.get("recipe_hash") or "")
    s.editkit_version = str(e.get("editkit_version") or "")
    s.pid = _int(e.get("pid"))
    recipe = e.get("recipe")
    s.recipe = recipe if isinstance(recipe, dict) else {}
    stages = e.get("stages")
    if isinstance(stages, list):
        s.planned_stages = [str(x) for x in stages]
        for name in s.planned_stages:
            s._stage(name)
    s._touch("header", "stages")


def _on_stage_start(s: RunState, e: dict, ts: float | None) -> None:
    st = s._stage(e.get("stage"))
    st.status, st.start_ts, st.last_ts = "running", ts, ts
    st.total, st.done, st.seconds = _int(e.get("total")), 0, None
    s.current_stage = st.name
    s._touch("stages", "header")


def _on_progress(s: RunState, e: dict, ts: float | None) -> None:
    st = s._stage(e.get("stage"))
    if st.status == "pending":
        st.status, st.start_ts = "running", ts
    st.done = _int(e.get("done"))
    total = _int(e.get("total"))
    if total is not None:
        st.total = total
    st.last_ts = ts
    s._touch("stages")


def _on_stage_end(s: RunState, e: dict, ts: float | None) -> None:
    st = s._stage(e.get("stage"))
    st.status, st.seconds, st.last_ts = "done", _num(e.get("seconds")), ts
    if st.total is not None and not (st.counts_steps and st.done):
        st.done = st.total  # a fit that stopped early keeps its step count (30/80, not 80/80)
    s._touch("stages", "header")


def _on_step(s: RunState, e: dict, ts: float | None) -> None:
    stage = str(e.get("stage") or "fit")
    step, total, loss = _int(e.get("step")), _int(e.get("total")), _num(e.get("loss"))
    s.n_steps += 1
    s.step, s.step_total, s.step_stage = step, total, stage
    s.loss, s.lr = loss, _num(e.get("lr"))
    metrics = e.get("metrics")
    if isinstance(metrics, dict):
        s.step_metrics = {str(k): v for k, v in metrics.items() if _num(v) is not None}
    x = float(step) if step is not None else float(s.n_steps)
    prefix = "" if stage == "fit" else f"{stage}:"
    if loss is not None:
        s.series.setdefault(f"{prefix}loss", []).append((x, loss))
    terms = e.get("terms")
    if isinstance(terms, dict):
        for name, value in terms.items():
            v = _num(value)
            if v is not None:
                s.series.setdefault(f"{prefix}{name}", []).append((x, v))
    st = s._stage(stage)
    if st.status == "pending":
        st.status, st.start_ts = "running", ts
    if step is not None:
        st.done = step
        st.counts_steps = True
    if total is not None:
        st.total = total
    st.last_ts = ts
    s._touch("loss", "stages", "header")


def _on_eval(s: RunState, e: dict, ts: float | None) -> None:
    phase = str(e.get("phase") or "?")
    metrics = e.get("metrics")
    if isinstance(metrics, dict):
        row = s.metrics.setdefault(phase, {})
        for k, v in metrics.items():
            n = _num(v)
            if n is not None:
                row[str(k)] = n
    s._touch("metrics")


def _on_heatmap(s: RunState, e: dict, ts: float | None) -> None:
    values = e.get("values")
    if not isinstance(values, list):
        raise ValueError("heatmap values is not a list")
    if values and not isinstance(values[0], list):
        values = [values]  # tolerate a 1-D list: one row
    grid = [[_num(v) for v in row] if isinstance(row, list) else [_num(row)] for row in values]
    name = str(e.get("name") or "heatmap")

    def labels(key: str, n: int) -> list[str] | None:
        got = e.get(key)
        return [str(x) for x in got] if isinstance(got, list) and len(got) == n else None

    s.heatmaps[name] = Heatmap(
        name=name,
        values=grid,
        xlabel=str(e.get("xlabel") or ""),
        ylabel=str(e.get("ylabel") or ""),
        title=str(e.get("title") or name),
        xlabels=labels("xlabels", max((len(r) for r in grid), default=0)),
        ylabels=labels("ylabels", len(grid)),
    )
    s._touch("heatmap")


def _on_robustness(s: RunState, e: dict, ts: float | None) -> None:
    fams = []
    for f in e.get("families") or []:
        if isinstance(f, dict):
            fams.append(
                RobustnessFamily(
                    family=str(f.get("family") or "?"),
                    n=_int(f.get("n")),
                    before=_num(f.get("before")),
                    after=_num(f.get("after")),
                )
            )
    s.robustness[str(e.get("capability") or "?")] = fams
    s._touch("robustness")


def _on_export(s: RunState, e: dict, ts: float | None) -> None:
    s.exports.append({k: v for k, v in e.items() if k not in ("type", "run_id")})
    s._touch("stages")


def _on_push(s: RunState, e: dict, ts: float | None) -> None:
    s.pushes.append({k: v for k, v in e.items() if k not in ("type", "run_id")})
    s._touch("stages")


def _on_log(s: RunState, e: dict, ts: float | None) -> None:
    level = str(e.get("level") or "info").lower()
    s.logs.append(LogLine(ts, level, str(e.get("message", ""))))
    s.n_logs += 1
    s._touch("log")


def _on_error(s: RunState, e: dict, ts: float | None) -> None:
    stage = e.get("stage")
    exc = e.get("exc_type")
    msg = str(e.get("message", ""))
    if exc:
        msg = f"{exc}: {msg}"
    line = LogLine(ts, "error", msg, str(stage) if stage else None)
    s.errors.append(line)
    s.logs.append(line)
    s.n_logs += 1
    if stage and str(stage) in s.stages and s.stages[str(stage)].status == "running":
        s.stages[str(stage)].status = "failed"
    s.status = "error"
    s._touch("log", "header", "stages")


def _on_run_end(s: RunState, e: dict, ts: float | None) -> None:
    status = str(e.get("status") or "ok")
    s.status = status if status in ENDED_STATUSES else "error"
    s.end_seconds = _num(e.get("seconds"))
    for st in s.stages.values():
        if st.status == "running":
            st.status = {"ok": "done", "error": "failed"}.get(s.status, "interrupted")
    s._touch("header", "stages")


_HANDLERS = {
    "run_start": _on_run_start,
    "stage_start": _on_stage_start,
    "progress": _on_progress,
    "stage_end": _on_stage_end,
    "step": _on_step,
    "eval": _on_eval,
    "heatmap": _on_heatmap,
    "robustness": _on_robustness,
    "export": _on_export,
    "push": _on_push,
    "log": _on_log,
    "error": _on_error,
    "run_end": _on_run_end,
}


# --------------------------------------------------------------------------- status & discovery


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


def has_events_file(path: Path) -> bool:
    """The TUI's notion of a run: a folder with an events.jsonl to read (``editkit.run.events.is_run_dir`` is
    the stricter one: a folder ``editkit apply`` created)."""
    return (Path(path) / EVENTS_FILE).is_file()


def find_runs(path: Path) -> list[Path]:
    """Run directories directly under `path` (those holding events.jsonl), sorted by name."""
    try:
        return sorted(p for p in Path(path).iterdir() if p.is_dir() and has_events_file(p))
    except OSError:
        return []


def load_run(path: Path) -> RunState:
    """Fold a whole events.jsonl (or a run directory) at once: for the CLI and tests."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    return RunState(run_id=path.parent.name).apply_all(EventTailer(path).read_new())


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
