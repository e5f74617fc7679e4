"""Pure event folding for the monitor: events.jsonl → RunState.

No Textual import here, so the logic is unit-testable and the CLI can reuse it (e.g. a one-line status).
Everything is computed from event timestamps, except "how long ago" questions (elapsed of a running run,
staleness), which take an explicit `now` so callers and tests control the clock. The parts a RunState
holds (stages, heatmaps, ...) are in `editkit_tui.records`, reading the log in `editkit_tui.tailer`, and
the clock- and OS-dependent views (display status, formatting) in `editkit_tui.views`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editkit_tui.records import Heatmap, LogLine, RobustnessFamily, StageState
from editkit_tui.tailer import EVENTS_FILE, EventTailer

MAX_LOG_LINES = 2000
ENDED_STATUSES = ("ok", "error", "interrupted")


# --------------------------------------------------------------------------- state


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
    checks: dict[str, tuple[str, bool | None, str]] = field(default_factory=dict)
    """removal check name → (title, passed: True / False / None undecided, its one-line summary)"""
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
    """Per-section change counters (header, stages, loss, metrics, heatmap, families, log) so a UI
    redraws only what changed."""

    # ----------------------------------------------------------------- folding

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event in. Unknown types are counted and ignored; malformed fields never raise."""
        self.n_events += 1
        ts = _num(event.get("ts"))
        if ts is not None:
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        kind = str(event.get("type"))
        handler = _HANDLERS.get(RENAMED_EVENTS.get(kind, kind))
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


def _on_check(s: RunState, e: dict, ts: float | None) -> None:
    passed = e.get("passed")
    s.checks[str(e.get("check") or "?")] = (
        str(e.get("title") or e.get("check") or "?"),
        passed if isinstance(passed, bool) else None,
        str(e.get("summary") or ""),
    )
    s._touch("metrics")


def _on_families(s: RunState, e: dict, ts: float | None) -> None:
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
    s._touch("families")


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


#: event types that runs of older editkit versions wrote → the type that carries the same fields now (the
#: paraphrase families' table was its own stage's event before it became a removal check's)
RENAMED_EVENTS = {"robustness": "families"}

_HANDLERS = {
    "run_start": _on_run_start,
    "stage_start": _on_stage_start,
    "progress": _on_progress,
    "stage_end": _on_stage_end,
    "step": _on_step,
    "eval": _on_eval,
    "heatmap": _on_heatmap,
    "families": _on_families,
    "check": _on_check,
    "export": _on_export,
    "push": _on_push,
    "log": _on_log,
    "error": _on_error,
    "run_end": _on_run_end,
}


# --------------------------------------------------------------------------- loading


def load_run(path: Path) -> RunState:
    """Fold a whole events.jsonl (or a run directory) at once: for the CLI and tests."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    return RunState(run_id=path.parent.name).apply_all(EventTailer(path).read_new())
