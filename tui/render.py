"""Rich renderables for the monitor panels, built from a RunState.

Kept apart from the Textual screens so every panel is a pure function of the state (easy to test and to
reuse from the CLI with a plain rich Console).
"""

from __future__ import annotations

import math

from rich.color import Color
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.style import Style
from rich.table import Table
from rich.text import Text

from editkit_tui.records import Heatmap, StageState
from editkit_tui.state import RunState
from editkit_tui.views import format_duration, format_value

STATUS_STYLE = {
    "running": "bold cyan",
    "ok": "bold green",
    "error": "bold white on red",
    "interrupted": "bold black on yellow",
    "stale": "bold magenta",
    "waiting": "dim",
}
STAGE_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "done": "green",
    "failed": "bold red",
    "interrupted": "yellow",
}
STAGE_ICON = {"pending": "·", "running": "▶", "done": "✓", "failed": "✗", "interrupted": "■"}


def status_text(status: str) -> Text:
    return Text(f" {status} ", style=STATUS_STYLE.get(status, ""))


def header_text(state: RunState, status: str, elapsed: float | None) -> Text:
    """Two lines: what the run is (recipe, model, method, seed, hash) and how it stands."""
    t = Text()
    t.append(state.name or state.run_id or "(no run_start yet)", style="bold")
    t.append("  ")
    t.append_text(status_text(status))
    t.append(f"  elapsed {format_duration(elapsed)}", style="")
    t.append("\n")
    parts = [
        ("model", state.model or "—"),
        ("method", state.method or "—"),
        ("seed", "—" if state.seed is None else str(state.seed)),
        ("recipe", state.recipe_hash[:12] or "—"),
        ("run", state.run_id or "—"),
    ]
    for i, (k, v) in enumerate(parts):
        if i:
            t.append("  ")
        t.append(f"{k} ", style="dim")
        t.append(v)
    return t


def summary_text(state: RunState, following: bool) -> Text:
    """One line with what a watcher looks at most: stage, step, loss, ETA, follow state."""
    t = Text()
    stage = state.stages.get(state.current_stage or "")
    t.append("stage ", style="dim")
    t.append(state.current_stage or "—", style="bold")
    if stage is not None and stage.total:
        t.append(f" {stage.done or 0}/{stage.total}")
    t.append("   step ", style="dim")
    if state.step is not None:
        t.append(f"{state.step}" + (f"/{state.step_total}" if state.step_total else ""), style="bold")
    else:
        t.append("—")
    t.append("   loss ", style="dim")
    t.append(format_value(state.loss), style="bold")
    if state.lr is not None:
        t.append("   lr ", style="dim")
        t.append(f"{state.lr:.2e}")
    t.append("   ETA ", style="dim")
    t.append(format_duration(state.eta_seconds()) if not state.ended else "—")
    t.append("   ")
    t.append("● following" if following else "❚❚ paused", style="green" if following else "yellow")
    return t


def _stage_progress(stage: StageState) -> ProgressBar | Text:
    frac = stage.fraction
    if frac is None:
        return Text("")
    return ProgressBar(total=1000, completed=int(round(frac * 1000)), width=24)


def timeline_table(state: RunState, now: float | None = None) -> Group:
    """Stages in plan order with status, progress bar, counts, duration and ETA; exports and pushes below.

    A running stage's time counts to ``now`` (the monitor's clock), so a long stage without progress
    events does not read 0s; a finished one shows the seconds of its stage_end event."""
    table = Table(expand=False, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("")
    table.add_column("stage")
    table.add_column("progress", no_wrap=True)
    table.add_column("done", justify="right")
    table.add_column("time", justify="right")
    table.add_column("ETA", justify="right")
    for st in state.ordered_stages():
        style = STAGE_STYLE.get(st.status, "")
        count = ""
        if st.total:
            count = f"{st.done or 0}/{st.total}" + (" early stop" if st.stopped_early else "")
        elif st.done:
            count = str(st.done)
        d = st.duration(now if not state.ended else None)
        secs = format_duration(d) if d is not None else ""
        eta = st.eta_seconds()
        table.add_row(
            Text(STAGE_ICON.get(st.status, "?"), style=style),
            Text(st.name, style=style),
            _stage_progress(st),
            count,
            secs,
            format_duration(eta) if eta is not None else "",
        )
    parts: list = [table]
    if not state.stages:
        parts.append(Text("no stages yet", style="dim"))
    for ex in state.exports:
        t = Text("\nexport ", style="bold")
        t.append(str(ex.get("path", "")))
        diff = ex.get("max_abs_logit_diff")
        t.append(f"  dtype {ex.get('dtype', '—')}  max |Δlogit| {format_value(_f(diff))}", style="dim")
        parts.append(t)
    for p in state.pushes:
        t = Text("\npush ", style="bold")
        t.append(f"{p.get('repo_id', '')}  {p.get('url', '')}  commit {str(p.get('commit', ''))[:10]}")
        parts.append(t)
    if state.n_unknown or state.n_malformed:
        parts.append(
            Text(
                f"\n{state.n_unknown} unknown and {state.n_malformed} malformed events ignored",
                style="dim",
            )
        )
    return Group(*parts)


def _f(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) else None


def _delta_text(d: float | None) -> Text:
    if d is None:
        return Text("—", style="dim")
    sign = "+" if d > 0 else ""
    # no good/bad colouring: a rise is good for accuracy, bad for perplexity or KL
    style = "cyan" if d > 0 else "magenta" if d < 0 else "dim"
    return Text(f"{sign}{format_value(d)}", style=style)


def metrics_group(state: RunState) -> Table | Text | Group:
    """The metrics table, then the removal checks as they are judged (pass / FAIL / undecided and why)."""
    table = metrics_table(state)
    if not state.checks:
        return table
    lines = Text()
    for title, passed, summary in state.checks.values():
        tag, style = {True: ("pass", "green"), False: ("FAIL", "red"), None: ("undecided", "yellow")}[passed]
        lines.append(f"{title}: ", style="bold")
        lines.append(tag, style=style)
        lines.append(f" — {summary}\n" if summary else "\n", style="dim")
    return Group(table, Text(""), Text("removal checks", style="bold underline"), lines)


def metrics_table(state: RunState) -> Table | Text:
    """metric × (base, edited, Δ, control, Δ): the cost and effect of the edit against its random control."""
    if not state.metrics:
        return Text("no eval events yet", style="dim")
    phases = ["base", "edited", "control"] + [
        p for p in state.metrics if p not in ("base", "edited", "control")
    ]
    names: list[str] = []
    for p in phases:
        for k in state.metrics.get(p, {}):
            if k not in names:
                names.append(k)
    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("edited", justify="right")
    table.add_column("Δ edited", justify="right")
    table.add_column("control", justify="right")
    table.add_column("Δ control", justify="right")
    extra = phases[3:]
    for p in extra:
        table.add_column(p, justify="right")
    base = state.metrics.get("base", {})
    for name in names:
        b = base.get(name)
        row: list = [name, format_value(b)]
        for phase in ("edited", "control"):
            v = state.metrics.get(phase, {}).get(name)
            row.append(format_value(v))
            row.append(_delta_text(None if v is None or b is None else v - b))
        row += [format_value(state.metrics[p].get(name)) for p in extra]
        table.add_row(*row)
    return table


# --------------------------------------------------------------------------- heatmap

_SEQUENTIAL = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]  # viridis-like
_DIVERGING = [(33, 102, 172), (146, 197, 222), (247, 247, 247), (244, 165, 130), (178, 24, 43)]


def _interp(stops: list[tuple[int, int, int]], u: float) -> Color:
    u = max(0.0, min(1.0, u))
    pos = u * (len(stops) - 1)
    i = min(int(pos), len(stops) - 2)
    f = pos - i
    a, b = stops[i], stops[i + 1]
    return Color.from_rgb(*(round(a[k] + (b[k] - a[k]) * f) for k in range(3)))


def cell_color(v: float | None, lo: float, hi: float) -> Color | None:
    """Diverging around 0 when the values straddle it, sequential otherwise; None for missing cells."""
    if v is None or not math.isfinite(v):
        return None
    if lo < 0 < hi:
        m = max(-lo, hi)
        return _interp(_DIVERGING, 0.5 + 0.5 * v / m)
    if hi == lo:
        return _interp(_SEQUENTIAL, 1.0)
    return _interp(_SEQUENTIAL, (v - lo) / (hi - lo))


def heatmap_text(hm: Heatmap, max_width: int = 110) -> Text:
    """Coloured cells (rows = ylabel, e.g. layers; columns = xlabel, e.g. heads) plus a legend.

    A single column (per-layer values) is drawn as one cell per row followed by the value.
    """
    finite = [v for row in hm.values for v in row if v is not None and math.isfinite(v)]
    t = Text()
    t.append(hm.title or hm.name, style="bold")
    t.append(f"   [{hm.name}]\n", style="dim")
    if not finite:
        t.append("no finite values\n", style="dim")
        return t
    lo, hi = min(finite), max(finite)
    n_rows = len(hm.values)
    n_cols = max((len(r) for r in hm.values), default=0)
    row_names = hm.ylabels or [str(i) for i in range(n_rows)]
    col_names = hm.xlabels or [str(j) for j in range(n_cols)]
    label_w = max(max((len(r) for r in row_names), default=1), len(hm.ylabel), 2)
    cell_w = 3 if n_cols * 3 + label_w + 1 <= max_width else 2 if n_cols * 2 + label_w + 1 <= max_width else 1
    if hm.xlabels:  # named columns: wide enough for the names when they fit
        wide = max(len(c) for c in col_names) + 1
        if n_cols * wide + label_w + 1 <= max_width:
            cell_w = max(cell_w, wide)
    single = n_cols == 1
    # column header
    t.append(f"{hm.ylabel:>{label_w}} ", style="dim")
    if single:
        t.append(hm.xlabel or "value", style="dim")
    else:
        step = 1 if cell_w >= 3 or n_cols <= 10 else 5
        for j in range(n_cols):
            lab = col_names[j] if j % step == 0 else ""
            t.append(f"{lab:>{cell_w}}"[-cell_w:] if lab else " " * cell_w, style="dim")
        if hm.xlabel:
            t.append(f"  ← {hm.xlabel}", style="dim")
    t.append("\n")
    for i, row in enumerate(hm.values):
        t.append(f"{row_names[i]:>{label_w}} ", style="dim")
        for v in row + [None] * (n_cols - len(row)):
            color = cell_color(v, lo, hi)
            if color is None:
                t.append("·".center(cell_w), style="dim")
            else:
                t.append(" " * cell_w, style=Style(bgcolor=color))
        if single:
            t.append(f" {format_value(row[0] if row else None)}")
        t.append("\n")
    # legend
    t.append(" " * (label_w + 1))
    t.append(f"{format_value(lo)} ", style="dim")
    for k in range(12):
        u = k / 11
        t.append(" ", style=Style(bgcolor=cell_color(lo + u * (hi - lo), lo, hi)))
    t.append(f" {format_value(hi)}", style="dim")
    # strongest cell: what a reader wants to know first
    best_i, best_j, best_v = 0, 0, None
    for i, row in enumerate(hm.values):
        for j, v in enumerate(row):
            if v is not None and math.isfinite(v) and (best_v is None or abs(v) > abs(best_v)):
                best_i, best_j, best_v = i, j, v
    where = row_names[best_i] if hm.ylabels else f"{hm.ylabel or 'row'} {best_i}"
    t.append(f"\n max |value| {format_value(best_v)} at {where}")
    if not single:
        t.append(f", {col_names[best_j] if hm.xlabels else (hm.xlabel or 'col') + ' ' + str(best_j)}")
    t.append("\n")
    return t


def heatmaps_group(state: RunState) -> Group | Text:
    if not state.heatmaps:
        return Text("no heatmap events yet", style="dim")
    return Group(*(heatmap_text(hm) for hm in state.heatmaps.values()))


def robustness_group(state: RunState) -> Group | Text:
    """Per capability, per paraphrase family: before → after and the change."""
    if not state.robustness:
        return Text("no paraphrase-family results yet (the removal checks send them)", style="dim")
    tables = []
    for cap, fams in state.robustness.items():
        table = Table(title=cap, title_justify="left", title_style="bold", show_edge=False, pad_edge=False)
        table.add_column("family")
        table.add_column("n", justify="right")
        table.add_column("before", justify="right")
        table.add_column("after", justify="right")
        table.add_column("Δ", justify="right")
        for f in fams:
            table.add_row(
                f.family,
                "—" if f.n is None else str(f.n),
                format_value(f.before),
                format_value(f.after),
                _delta_text(f.delta),
            )
        tables.append(table)
    return Group(*tables)


LOG_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}


def log_line_text(line, first_ts: float | None) -> Text:
    """`+12s  LEVEL  message`; time relative to the run start so it does not depend on the time zone."""
    rel = "" if line.ts is None or first_ts is None else f"+{format_duration(line.ts - first_ts)}"
    t = Text(f"{rel:>8} ", style="dim")
    level = line.level if line.level in LOG_STYLE else "info"
    t.append(f"{line.level.upper():<7} ", style=LOG_STYLE[level] or "dim")
    msg = f"[{line.stage}] {line.message}" if line.stage else line.message
    t.append(msg, style=LOG_STYLE[level])
    return t
