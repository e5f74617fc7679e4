"""The monitor: event folding (tui.state), the incremental tailer, and the Textual app driven by its pilot.

Event files come from tests/tui_events.py (fixed timestamps). SVG snapshots live in tests/snapshots/;
regenerate them with EDITKIT_UPDATE_SNAPSHOTS=1.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, RichLog, Static, TabbedContent

from editkit_tui.app import MonitorApp, resolve_target
from editkit_tui.list_screen import RunListScreen
from editkit_tui.run_screen import CardScreen, RunScreen
from editkit_tui.state import RunState, load_run
from editkit_tui.tailer import EventTailer, find_runs
from editkit_tui.views import display_status, format_duration
from tests.tui_events import T0, EventWriter, write_crashed_run, write_full_run

SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (120, 40)
FIXED_NOW = T0 + 1000.0


def make_app(path: Path, **kw) -> MonitorApp:
    """No animations: pilot waits for them (0.4 s per tab switch) and they could leak into screenshots."""
    app = MonitorApp(path, **kw)
    app.animation_level = "none"
    return app


def text_of(app: MonitorApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


async def wait_for(pilot, predicate, timeout: float = 3.0) -> None:
    """Let the app's own poll timer run until predicate() holds (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before timeout")
        await pilot.pause(0.02)


# --------------------------------------------------------------------------- pure state


def test_fold_full_run(tmp_path):
    write_full_run(tmp_path / "r")
    s = load_run(tmp_path / "r")
    assert (s.name, s.method, s.model, s.seed) == ("remove_moral", "scalpel", "SmolLM2-135M-Instruct", 1234)
    assert s.recipe_hash.startswith("3f9a0c1d2e4b")
    assert s.status == "ok" and s.ended
    assert [st.status for st in s.ordered_stages()] == ["done"] * 9
    assert s.stages_done() == 9
    assert s.stages["fit"].done == 10 and s.stages["fit"].total == 10 and s.stages["fit"].seconds == 21.0
    assert s.step == 10 and s.step_total == 10 and s.n_steps == 10
    assert s.loss == pytest.approx(0.2)
    assert sorted(s.series) == ["L_eq", "loss", "text_kl"]
    assert s.series["L_eq"][0] == (1.0, 1.0) and s.series["text_kl"][-1] == (10.0, 0.1)
    assert s.metrics["base"]["target_acc"] == 0.825 and s.metrics["edited"]["target_acc"] == 0.5
    assert s.metrics["control"]["ppl"] == 10.83
    assert s.heatmaps["head_effect"].values[0][:3] == [-1.0, -0.6667, -0.3333]
    assert len(s.heatmaps["head_effect"].values) == 6 and len(s.heatmaps["lora_norm"].values[0]) == 1
    fams = s.robustness["moral"]
    assert [f.family for f in fams] == ["original", "paraphrase", "negated"]
    assert fams[0].delta == pytest.approx(-0.325)
    assert [ln.level for ln in s.logs] == ["info", "warning"]
    assert s.exports[0]["dtype"] == "float32"
    assert s.elapsed(now=T0 + 10**6) == pytest.approx(s.end_seconds)  # ended: from run_end, not the clock
    assert s.n_unknown == 0 and s.n_malformed == 0


def test_an_older_runs_family_table_event_is_shown_like_todays():
    fams = [{"family": "original", "n": 8, "before": 0.9, "after": 0.5}, {"family": "stored", "n": 8}]
    new, old = RunState(), RunState()
    new.apply({"ts": T0, "type": "families", "check": "x", "capability": "target", "families": fams})
    old.apply({"ts": T0, "type": "robustness", "capability": "target", "families": fams})  # before 2026-12-07
    assert old.robustness == new.robustness and old.n_unknown == 0
    assert [(f.family, f.n, f.before, f.after) for f in old.robustness["target"]] == [
        ("original", 8, 0.9, 0.5),
        ("stored", 8, None, None),
    ]


def test_fold_eta_elapsed_and_bad_events():
    s = RunState()
    s.apply({"ts": T0, "type": "run_start", "name": "x", "stages": ["fit"], "pid": 1})
    s.apply({"ts": T0 + 1, "type": "stage_start", "stage": "fit", "total": 10})
    s.apply({"ts": T0 + 11, "type": "progress", "stage": "fit", "done": 5, "total": 10})
    assert s.current_stage == "fit"
    assert s.eta_seconds() == pytest.approx(10.0)  # 5 done in 10 s → 5 left ≈ 10 s
    assert s.elapsed(now=T0 + 100) == 100.0  # running: against the clock
    s.apply({"ts": T0 + 12, "type": "heatmap", "values": "oops"})
    s.apply({"ts": T0 + 12, "type": "no_such_event", "x": 1})
    s.apply({"ts": T0 + 12, "type": "step", "step": 6, "loss": float("nan"), "terms": {"a": "bad"}})
    assert (s.n_malformed, s.n_unknown, s.step) == (1, 1, 6)
    s.apply({"ts": T0 + 13, "type": "run_end", "status": "interrupted", "seconds": 13.0})
    assert s.status == "interrupted" and s.stages["fit"].status == "interrupted" and s.eta_seconds() is None


def test_crashed_run_state(tmp_path):
    write_crashed_run(tmp_path / "r")
    s = load_run(tmp_path / "r")
    assert s.status == "error"
    assert s.error_message == "fit: RuntimeError: CUDA out of memory while computing means"
    assert s.stages["fit"].status == "failed" and s.stages["data"].status == "pending"


def test_error_event_without_run_end_is_error(tmp_path):
    w = EventWriter(tmp_path / "r")
    w.start()
    w.emit("error", stage="load", message="no such model", exc_type="ModelLoadError")
    s = load_run(tmp_path / "r")
    assert display_status(s, mtime=T0, now=FIXED_NOW) == "error"
    assert s.elapsed(now=FIXED_NOW) == 1.0  # a dead run does not keep ticking


def test_resumed_run_is_running_again(tmp_path):
    w = write_crashed_run(tmp_path / "r")
    w.start(name="remove_refusal", method="refusal")  # --resume appends a second attempt
    w.emit("stage_start", stage="fit", total=10)
    s = load_run(tmp_path / "r")
    assert s.status == "running" and s.error_message is None
    assert s.stages["load"].status == "done" and s.stages["fit"].status == "running"
    assert s.elapsed(now=w.t + 5) == 6.0  # from the latest run_start
    assert [ln.level for ln in s.logs] == ["error"]  # the earlier failure stays in the log


def test_stage_times_come_from_events_and_the_clock():
    """A stage running for minutes without progress events shows its time, not 0s; load its own seconds."""
    from editkit_tui.render import timeline_table

    s = RunState()
    s.apply({"ts": T0, "type": "run_start", "name": "x", "stages": ["load", "eval_base"], "pid": 1})
    s.apply({"ts": T0 + 0.1, "type": "stage_start", "stage": "load", "total": None})
    s.apply({"ts": T0 + 0.1, "type": "stage_end", "stage": "load", "seconds": 33.0})  # timed before the run
    s.apply({"ts": T0 + 1, "type": "stage_start", "stage": "eval_base", "total": None})
    assert s.stages["load"].duration() == 33.0
    assert s.stages["eval_base"].duration(now=T0 + 181) == 180.0
    from rich.console import Console

    console = Console(width=120, record=True)
    console.print(timeline_table(s, now=T0 + 181))
    text = console.export_text()
    assert "33s" in text and "3m00s" in text


def test_judged_checks_show_under_the_metrics_with_their_verdicts():
    """``check`` events (one per judged removal check, then the headline) fold into the state and render
    under the metrics table: pass / FAIL / undecided and the check's one line; without them, the table alone."""
    from rich.console import Console

    from editkit_tui.render import metrics_group, metrics_table

    s = RunState()
    s.apply({"ts": T0, "type": "eval", "phase": "base", "metrics": {"target_accuracy": 0.8}})
    assert metrics_group(s).__class__ is metrics_table(s).__class__  # nothing judged yet: the table alone
    for name, passed, summary in (
        ("separation", False, "2 of 3 unseen frames still separate"),
        ("probe", None, "the base model's best layer is below 0.60"),
        ("verdict", False, "answer tokens only"),
    ):
        s.apply(
            {
                "ts": T0 + 1,
                "type": "check",
                "check": name,
                "title": name.title(),
                "passed": passed,
                "summary": summary,
            }
        )
    assert s.checks["separation"] == ("Separation", False, "2 of 3 unseen frames still separate")
    assert s.checks["probe"][1] is None
    console = Console(width=120, record=True)
    console.print(metrics_group(s))
    text = console.export_text()
    assert "Separation: FAIL — 2 of 3 unseen frames still separate" in text
    assert "Probe: undecided — the base model's best layer is below 0.60" in text
    assert "Verdict: FAIL — answer tokens only" in text and "target_accuracy" in text


def test_early_stopped_fit_keeps_its_step_count():
    s = RunState()
    s.apply({"ts": T0, "type": "run_start", "name": "x", "stages": ["fit"], "pid": 1})
    s.apply({"ts": T0 + 1, "type": "stage_start", "stage": "fit", "total": 80})
    for i in range(1, 31):
        s.apply({"ts": T0 + 1 + i, "type": "step", "stage": "fit", "step": i, "total": 80, "loss": 1.0})
    s.apply({"ts": T0 + 40, "type": "stage_end", "stage": "fit", "seconds": 39.0})
    fit = s.stages["fit"]
    assert (fit.status, fit.done, fit.total, fit.stopped_early) == ("done", 30, 80, True)
    # a stage counted by progress events ends full
    s.apply({"ts": T0 + 41, "type": "stage_start", "stage": "eval_edited", "total": None})
    s.apply({"ts": T0 + 42, "type": "progress", "stage": "eval_edited", "done": 5, "total": 10})
    s.apply({"ts": T0 + 43, "type": "stage_end", "stage": "eval_edited", "seconds": 2.0})
    assert s.stages["eval_edited"].done == 10 and not s.stages["eval_edited"].stopped_early


def test_heatmap_names_its_rows_and_columns():
    from rich.console import Console

    from editkit_tui.render import heatmap_text

    s = RunState()
    roles = ["q", "k", "v", "o", "gate", "up", "down"]
    values = [[0.0] * 7 for _ in range(3)]
    values[2][6] = 0.9
    s.apply(
        {
            "ts": T0,
            "type": "heatmap",
            "name": "d",
            "values": values,
            "xlabel": "module",
            "xlabels": roles,
            "ylabel": "layer",
        }
    )
    console = Console(width=120, record=True)
    console.print(heatmap_text(s.heatmaps["d"]))
    text = console.export_text()
    assert "gate" in text and "down" in text and "max |value| 0.9000 at layer 2, down" in text
    s.apply(
        {
            "ts": T0,
            "type": "heatmap",
            "name": "r",
            "values": [[1.0, 2.0], [0.1, 0.3]],
            "xlabels": ["4", "7"],
            "ylabels": ["refusal log-odds", "harmless KL"],
        }
    )
    console = Console(width=120, record=True)
    console.print(heatmap_text(s.heatmaps["r"]))
    text = console.export_text()
    assert "refusal log-odds" in text and "at refusal log-odds, 7" in text


def test_stale_needs_quiet_file_and_dead_pid(tmp_path):
    w = EventWriter(tmp_path / "r")
    w.start(pid=2_000_000_000)
    s = load_run(tmp_path / "r")
    now = time.time()
    assert display_status(s, mtime=now - 10, now=now) == "running"
    assert display_status(s, mtime=now - 1000, now=now) == "stale"
    s.pid = os.getpid()  # alive: a long quiet stage is not stale
    assert display_status(s, mtime=now - 1000, now=now) == "running"


def test_tailer_truncated_line_then_completed(tmp_path):
    path = tmp_path / "events.jsonl"
    tailer = EventTailer(path)
    assert tailer.read_new() == [] and not tailer.exists
    line = json.dumps({"ts": T0, "type": "log", "level": "info", "message": "héllo"}) + "\n"
    raw = line.encode()
    path.write_bytes(raw[:17])  # cut mid-line
    assert tailer.read_new() == [] and tailer.pending_bytes == 17
    with open(path, "ab") as fh:
        fh.write(raw[17:-1])  # still no newline
    assert tailer.read_new() == []
    with open(path, "ab") as fh:
        fh.write(b"\n{not json}\n[1, 2]\n")
    events = tailer.read_new()
    assert [e["message"] for e in events] == ["héllo"]
    assert tailer.bad_lines == 2 and tailer.offset == path.stat().st_size and tailer.pending_bytes == 0
    # a split multi-byte character survives
    raw2 = (json.dumps({"type": "log", "message": "é"}, ensure_ascii=False) + "\n").encode()
    cut = raw2.index("é".encode()) + 1
    with open(path, "ab") as fh:
        fh.write(raw2[:cut])
    assert tailer.read_new() == []
    with open(path, "ab") as fh:
        fh.write(raw2[cut:])
    assert tailer.read_new()[0]["message"] == "é"
    # the file replaced by a shorter one: start over
    path.write_text(json.dumps({"type": "log", "message": "new"}) + "\n")
    assert [e["message"] for e in tailer.read_new()] == ["new"] and tailer.restarted


def test_find_runs_and_resolve_target(tmp_path):
    write_full_run(tmp_path / "runs" / "b-2")
    write_crashed_run(tmp_path / "runs" / "a-1")
    (tmp_path / "runs" / "not-a-run").mkdir()
    assert [p.name for p in find_runs(tmp_path / "runs")] == ["a-1", "b-2"]
    assert resolve_target(tmp_path / "runs") == ("list", tmp_path / "runs")
    assert resolve_target(tmp_path / "runs" / "a-1") == ("run", tmp_path / "runs" / "a-1")
    assert resolve_target(tmp_path / "runs" / "a-1" / "events.jsonl") == ("run", tmp_path / "runs" / "a-1")
    assert resolve_target(tmp_path / "missing") == ("run", tmp_path / "missing")
    assert (
        format_duration(125) == "2m05s" and format_duration(3725) == "1h02m" and format_duration(None) == "—"
    )


def test_reads_the_real_event_log_writer(tmp_path):
    """Compatibility with editkit.run.events.EventLog (NaN → null, stage context manager, fsync'd lines)."""
    from editkit.run.events import EventLog

    log = EventLog(tmp_path / "events.jsonl", run_id="r-1")
    log.emit(
        "run_start",
        name="n",
        method="heads",
        model="m",
        seed=0,
        recipe_hash="h",
        pid=os.getpid(),
        stages=["fit"],
    )
    with log.stage("fit", total=2):
        log.emit(
            "step", stage="fit", step=1, total=2, loss=float("nan"), terms={"eq": 0.5}, metrics={}, lr=0.1
        )
        log.progress("fit", 2, 2)
    log.emit("run_end", status="ok", seconds=1.0)
    log.close()
    s = load_run(tmp_path)
    assert s.run_id == "r-1" and s.status == "ok" and s.stages["fit"].status == "done"
    assert s.loss is None and s.series == {"eq": [(1.0, 0.5)]} and s.n_malformed == 0


# --------------------------------------------------------------------------- app (pilot)


def test_live_run_updates_and_follow_toggle(tmp_path):
    w = EventWriter(tmp_path / "run")
    w.start()
    w.emit("stage_start", stage="fit", total=10)

    async def scenario():
        app = make_app(tmp_path / "run", poll_interval=0.05, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, RunScreen)
            assert "step —" in text_of(app, "#summary")
            assert "stage fit 0/10" in text_of(app, "#summary")
            w.steps(1, 3, 10)
            await wait_for(pilot, lambda: "step 3/10" in text_of(app, "#summary"))
            summary = text_of(app, "#summary")
            assert "loss 0.3633" in summary and "stage fit 3/10" in summary and "● following" in summary
            assert "ETA 14s" in summary  # 3 steps in 6 s → 7 left
            assert "running" in text_of(app, "#run-header")
            await pilot.press("f")
            assert not app.follow and "paused" in text_of(app, "#summary")
            w.steps(4, 5, 10)
            await pilot.pause(0.3)
            assert "step 3/10" in text_of(app, "#summary")  # paused: nothing read
            await pilot.press("f")
            await wait_for(pilot, lambda: "step 5/10" in text_of(app, "#summary"))
            w.emit("stage_end", stage="fit", seconds=10.0)
            w.emit("stage_start", stage="eval_edited", total=2)
            await wait_for(pilot, lambda: "stage eval_edited 0/2" in text_of(app, "#summary"))
            w.emit("run_end", status="ok", seconds=w.t - T0)
            await wait_for(pilot, lambda: " ok " in text_of(app, "#run-header"))
            assert "elapsed 13s" in text_of(app, "#run-header")

    asyncio.run(scenario())


def test_crashed_run_shows_error_banner(tmp_path):
    write_crashed_run(tmp_path / "run")

    async def scenario():
        app = make_app(tmp_path / "run", clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            banner = app.screen.query_one("#error-banner", Static)
            assert banner.display
            assert "RUN FAILED  fit: RuntimeError: CUDA out of memory" in str(banner.content)
            assert " error " in text_of(app, "#run-header")
            await pilot.press("6")
            log = app.screen.query_one("#log-body", RichLog)
            assert len(log.lines) == 1 and "CUDA out of memory" in log.lines[0].text

    asyncio.run(scenario())


def test_truncated_last_line_in_app(tmp_path):
    w = EventWriter(tmp_path / "run")
    w.start()
    w.emit("stage_start", stage="fit", total=10)
    step = {"ts": T0 + 9, "type": "step", "stage": "fit", "step": 1, "total": 10, "loss": 0.5, "terms": {}}
    line = json.dumps(step) + "\n"

    async def scenario():
        app = make_app(tmp_path / "run", follow=False, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            w.write_raw(line[:25])
            screen.refresh_from_file()
            await pilot.pause()
            assert "step —" in text_of(app, "#summary")
            w.write_raw(line[25:])
            screen.refresh_from_file()
            await pilot.pause()
            assert "step 1/10" in text_of(app, "#summary") and "loss 0.5000" in text_of(app, "#summary")

    asyncio.run(scenario())


def test_torn_last_line_of_a_dead_run_is_shown_as_unreadable(tmp_path):
    """A run killed mid-line (or stopped by a full disk) leaves a last line without its newline: the
    monitor shows the run from the complete lines and says one line is unreadable."""
    write_crashed_run(tmp_path / "run")
    with open(tmp_path / "run" / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"ts": 1, "type": "log", "level": "info", "mess')

    async def scenario():
        app = make_app(tmp_path / "run", clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE):
            assert " error " in text_of(app, "#run-header")
            assert "RUN FAILED  fit: RuntimeError: CUDA out of memory" in text_of(app, "#error-banner")
            assert text_of(app, "#message") == "1 unreadable line in events.jsonl skipped."

    asyncio.run(scenario())


def test_missing_then_empty_then_events(tmp_path):
    run = tmp_path / "run"

    async def scenario():
        app = make_app(run, follow=False, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            msg = screen.query_one("#message", Static)
            assert msg.display and f"No run here: {run} does not exist." == str(msg.content)
            run.mkdir()
            screen.refresh_from_file()
            assert "events.jsonl does not exist" in str(msg.content)
            (run / "events.jsonl").write_text("")
            screen.refresh_from_file()
            assert str(msg.content).endswith("events.jsonl is empty.")
            EventWriter(run).start()
            screen.refresh_from_file()
            await pilot.pause()
            assert not msg.display and "remove_moral" in text_of(app, "#run-header")

    asyncio.run(scenario())


def test_run_list_navigation(tmp_path):
    runs = tmp_path / "runs"
    write_full_run(runs / "remove_moral-1")
    write_crashed_run(runs / "remove_refusal-2")

    async def scenario():
        app = make_app(runs, clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            assert isinstance(app.screen, RunListScreen)
            table = app.screen.query_one("#runs", DataTable)
            assert table.row_count == 2
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(2)]
            assert rows[0] == [
                "remove_moral-1",  # the run id: runs of one recipe share a name
                "remove_moral",
                "scalpel",
                "SmolLM2-135M-Instruct",
                "card",
                "9/9 stages",
                " ok ",
                "49s",
            ]
            assert rows[1][4:] == ["fit", "1/9 stages", " error ", "9s"]
            await pilot.press("enter")
            assert isinstance(app.screen, RunScreen) and app.screen.watcher.run_dir == runs / "remove_moral-1"
            await pilot.press("escape")
            assert isinstance(app.screen, RunListScreen)
            await pilot.press("down", "enter")
            assert app.screen.watcher.run_dir == runs / "remove_refusal-2"
            assert app.screen.query_one("#error-banner", Static).display
            # a new run appearing while the list is open
            await pilot.press("escape")
            write_full_run(runs / "remove_moral-3")
            app.screen.refresh_runs()
            assert table.row_count == 3

    asyncio.run(scenario())


def test_empty_runs_dir_message(tmp_path):
    (tmp_path / "runs").mkdir()

    async def scenario():
        app = make_app(tmp_path / "runs")
        async with app.run_test(size=SIZE):
            assert "No runs in" in text_of(app, "#list-message")

    asyncio.run(scenario())


def test_panel_keys_and_card(tmp_path):
    write_full_run(tmp_path / "run")

    async def scenario():
        app = make_app(tmp_path / "run", clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            tabs = app.screen.query_one("#panels", TabbedContent)
            seen = []
            for key in "234561":
                await pilot.press(key)
                seen.append(tabs.active)
            assert seen == ["loss", "metrics", "heatmap", "families", "log", "timeline"]
            await pilot.press("6")
            assert app.focused is app.screen.query_one("#log-body", RichLog)  # arrows scroll the panel
            await pilot.press("1")
            await pilot.press("tab")
            assert tabs.active == "loss"
            await pilot.press("shift+tab", "shift+tab")
            assert tabs.active == "log"
            metrics = app.screen.query_one("#metrics-body", Static).content
            assert [c.header for c in metrics.columns] == [
                "metric",
                "base",
                "edited",
                "Δ edited",
                "control",
                "Δ control",
            ]
            assert [str(c) for c in metrics.columns[3]._cells] == ["-0.3250", "+0.1500", "+0.0310"]
            await pilot.press("c")  # no card yet: a notice, no screen
            assert isinstance(app.screen, RunScreen)
            (tmp_path / "run" / "model").mkdir()
            (tmp_path / "run" / "model" / "README.md").write_text(
                "# remove_moral\n\nMoral reasoning removed.\n"
            )
            await pilot.press("c")
            assert isinstance(app.screen, CardScreen)
            await pilot.press("escape")
            assert isinstance(app.screen, RunScreen)
            await pilot.press("escape")  # no list behind a run opened directly: stays
            assert isinstance(app.screen, RunScreen)
            await pilot.press("q")
        assert app.return_code == 0

    asyncio.run(scenario())


# --------------------------------------------------------------------------- snapshots


def check_snapshot(name: str, svg: str) -> None:
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("EDITKIT_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        path.write_text(svg, encoding="utf-8")
        return
    if not path.exists():  # a missing snapshot is a failure, never a silent first write
        pytest.fail(f"missing snapshot {path}; write it with EDITKIT_UPDATE_SNAPSHOTS=1 and commit it")
    assert svg == path.read_text(encoding="utf-8"), (
        f"{path.name} differs; inspect and rerun with EDITKIT_UPDATE_SNAPSHOTS=1 if the change is intended"
    )


def test_snapshots(tmp_path, monkeypatch):
    # relative paths: the screenshots must not contain the tmp dir
    monkeypatch.chdir(tmp_path)
    write_full_run(Path("runs/remove_moral-20250615"))
    write_crashed_run(Path("runs/remove_refusal-20250616"))

    async def scenario():
        app = make_app(Path("runs"), clock=lambda: FIXED_NOW)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            check_snapshot("run_list", app.export_screenshot())
            await pilot.press("enter")
            await pilot.pause()
            for key, panel in zip(
                "123456", ["timeline", "loss", "metrics", "heatmap", "families", "log"], strict=True
            ):
                await pilot.press(key)
                await pilot.pause()
                check_snapshot(f"run_{panel}", app.export_screenshot())
            await pilot.press("escape", "down", "enter")
            await pilot.pause()
            check_snapshot("run_crashed", app.export_screenshot())

    asyncio.run(scenario())
