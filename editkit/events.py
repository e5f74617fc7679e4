"""Run directories and the append-only event log (schema: docs/events.md). The TUI only reads this."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from editkit.errors import OutputError

RUN_MARKER = ".editkit-run"
EVENTS = "events.jsonl"


def _clean(o: Any) -> Any:
    """JSON-safe: NaN/inf become None (JSON has no NaN), tensors/numpy scalars become numbers."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "tolist"):
        return _clean(o.tolist())
    if isinstance(o, Path):
        return str(o)
    return o


class EventLog:
    """Appends one JSON object per line, flushed per event, so readers never wait.

    Every event is flushed to the operating system at once (a reader on the machine sees it). Events are
    also fsync'd to the disk, except the frequent ``step``/``progress`` ones, which are fsync'd at most
    every ``FSYNC_EVERY_S`` seconds: an fsync per optimizer step or knockout batch costs milliseconds on
    a cloud disk, which on a GPU is a share of the step itself.
    """

    FREQUENT = frozenset({"step", "progress"})
    FSYNC_EVERY_S = 2.0

    def __init__(self, path: Path, run_id: str, listener: Callable[[dict], None] | None = None):
        self.path = Path(path)
        self.run_id = run_id
        self.listener = listener  # called with every event after it is written (the CLI's progress view)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the run)
        self._synced = 0.0

    def emit(self, type: str, **fields: Any) -> dict:
        event = {"ts": time.time(), "type": type, "run_id": self.run_id, **_clean(fields)}
        self._fh.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._fh.flush()
        now = time.monotonic()
        if type not in self.FREQUENT or now - self._synced >= self.FSYNC_EVERY_S:
            os.fsync(self._fh.fileno())
            self._synced = now
        if self.listener is not None:
            self.listener(event)
        return event

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)

    @contextmanager
    def stage(self, stage: str, total: int | None = None) -> Iterator[None]:
        t0 = time.time()
        self.emit("stage_start", stage=stage, total=total)
        yield
        self.emit("stage_end", stage=stage, seconds=round(time.time() - t0, 3))

    def progress(self, stage: str, done: int, total: int | None) -> None:
        self.emit("progress", stage=stage, done=done, total=total)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


class StageCounter:
    """Progress of one stage in units of work (scored rows), summed over the evaluations it runs.

    ``grow(n)`` adds a planned evaluation's rows to the total, ``add(k)`` counts rows done; ``progress``
    events go out at most every ``every`` seconds (and always when the count reaches the total), so a UI
    gets a total and an ETA without an fsync per batch.
    """

    def __init__(self, events: EventLog, stage: str, every: float = 0.5):
        self.events, self.stage, self.every = events, stage, every
        self.done = self.total = 0
        self._last = 0.0

    def grow(self, n: int) -> None:
        self.total += n
        self._emit(force=True)

    def add(self, k: int) -> None:
        self.done = min(self.total, self.done + k)
        self._emit(force=self.done == self.total)

    def _emit(self, force: bool) -> None:
        now = time.time()
        if force or now - self._last >= self.every:
            self._last = now
            self.events.progress(self.stage, self.done, self.total)


class NullEventLog(EventLog):
    """An event log that writes nowhere (library calls outside a run)."""

    def __init__(self):  # noqa: D401
        self.run_id = ""
        self.path = Path(os.devnull)
        self.listener = None

    def emit(self, type: str, **fields: Any) -> dict:
        return {"type": type, **fields}

    def close(self) -> None:
        pass


def read_events(path: str | Path) -> list[dict]:
    """All complete events; a truncated last line (being written) and garbage lines are skipped."""
    p = Path(path)
    if p.is_dir():
        p = p / EVENTS
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ev, dict):
            out.append(ev)
    return out


def is_run_dir(path: Path) -> bool:
    """A directory ``editkit apply`` created (it holds the run marker)."""
    return (Path(path) / RUN_MARKER).exists()


def prepare_run_dir(root: Path, name: str, out: Path | None, *, resume: bool, overwrite: bool) -> Path:
    """Check (without creating anything) where the run goes; errors if the place is unusable."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(root) / f"{name}-{stamp}"
        i = 1
        while out.exists():
            out = Path(root) / f"{name}-{stamp}-{i}"
            i += 1
        if resume:
            raise OutputError("--resume needs --out RUN_DIR (the run directory to continue)")
        return out
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise OutputError(f"{out}: exists and is not a directory")
        if is_run_dir(out):
            if not (resume or overwrite):
                raise OutputError(
                    f"{out}: is an existing editkit run; pass --resume to continue it or --overwrite"
                )
        elif any(out.iterdir()):
            raise OutputError(f"{out}: exists, is not empty and is not an editkit run; choose another --out")
    elif resume:
        raise OutputError(f"{out}: --resume given but the run directory does not exist")
    return out


def create_run_dir(path: Path, meta: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_MARKER).write_text(json.dumps(meta, indent=1))
    return path


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """``metrics.json`` of a run, replaced atomically (NaN/inf as null)."""
    tmp = Path(run_dir) / ".metrics.json.tmp"
    tmp.write_text(json.dumps(_clean(metrics), indent=1))
    tmp.replace(Path(run_dir) / "metrics.json")
