"""Run directories and the append-only event log (schema: docs/events.md). The TUI only reads this."""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from editkit.errors import OutputError, disk_full_error, disk_full_reason
from editkit.run.record import RunRecord, validate_record

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
        try:
            self._fh.write(json.dumps(event, ensure_ascii=False) + "\n")
            self._fh.flush()
        except OSError as e:  # a full disk: readers skip the torn last line; the user gets one line
            if disk_full_reason(e):
                raise disk_full_error(e, self.path) from None
            raise
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


class Tally:
    """Work units done, reported as ``(done, total)`` to ``report`` after every ``tally(k)`` (a progress bar
    outside a run; ``total`` may be set after the tally is made)."""

    def __init__(self, report: Callable[[int, int], None] | None = None, total: int = 0):
        self.report, self.total, self.done = report, total, 0

    def __call__(self, k: int) -> None:
        self.done += k
        if self.report is not None:
            self.report(self.done, self.total)


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


def create_run_dir(path: Path, meta: dict, *, fresh: bool = False, auto_named: bool = False) -> Path:
    """Make ``path`` a run directory. ``fresh``: it must not exist yet — claimed with one ``mkdir``, so of
    two commands that chose the same folder only one gets it: the other, when the name was chosen
    automatically (``runs/<name>-<timestamp>``, two applies in one second), takes the next free name, and
    otherwise stops with one line. Returns the directory."""
    path = Path(path)
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        base, i = path, 1
        while True:
            try:
                path.mkdir()
                break
            except FileExistsError:
                if not auto_named:
                    raise OutputError(
                        f"{path}: another command created it after this one started; choose another --out"
                    ) from None
                path, i = base.with_name(f"{base.name}-{i}"), i + 1
    else:
        path.mkdir(parents=True, exist_ok=True)
    (path / RUN_MARKER).write_text(json.dumps(meta, indent=1))
    return path


def write_metrics(run_dir: Path, metrics: dict) -> None:
    """``metrics.json`` of a run, replaced atomically (NaN/inf as null); a full disk keeps the previous
    file and says so in one line."""
    tmp = Path(run_dir) / ".metrics.json.tmp"
    validate_record(metrics, "metrics.json (as this run would write it)")  # a stage wrote a wrong section
    text = json.dumps(_clean(metrics), indent=1)
    try:
        tmp.write_text(text)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if disk_full_reason(e):
            raise disk_full_error(e, Path(run_dir) / "metrics.json", len(text.encode())) from None
        raise OutputError(f"{Path(run_dir) / 'metrics.json'}: cannot write: {e.strerror}") from None
    tmp.replace(Path(run_dir) / "metrics.json")


def load_metrics(run_dir: Path, missing_ok: bool = True) -> tuple[dict, RunRecord]:
    """A run's ``metrics.json``, read and checked against the run record once: (the dict as stored, the
    typed ``RunRecord``); empty when absent and ``missing_ok``. A damaged or foreign file is one line
    naming the field."""
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        if missing_ok:
            return {}, RunRecord()
        raise OutputError(f"{Path(run_dir)}: has no metrics.json (the run did not get far enough)")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise OutputError(
            f"{path}: damaged: not valid JSON ({e}); re-run the run with `editkit apply --resume`"
        ) from None
    if not isinstance(metrics, dict):
        raise OutputError(f"{path}: damaged: not a JSON object")
    try:
        return metrics, validate_record(metrics, str(path))
    except ValueError as e:
        raise OutputError(str(e)) from None


def read_metrics(run_dir: Path, missing_ok: bool = True) -> dict:
    """A run's ``metrics.json`` as stored, checked (:func:`load_metrics`)."""
    return load_metrics(run_dir, missing_ok)[0]


def read_record(run_dir: Path, missing_ok: bool = True) -> RunRecord:
    """A run's ``metrics.json`` as the typed run record (:func:`load_metrics`)."""
    return load_metrics(run_dir, missing_ok)[1]


def recorded_path(run_dir: Path, path: Path) -> str:
    """How a run records one of its paths: relative to the run directory when inside it (so the run can
    be moved or copied), absolute otherwise (an ``export.dir`` elsewhere)."""
    p, r = Path(path).expanduser().resolve(), Path(run_dir).resolve()
    if p == r or r in p.parents:
        return p.relative_to(r).as_posix()
    return str(p)


def resolve_recorded(run_dir: Path, stored: str | None, default: str = "model") -> Path:
    """A path a run recorded, resolved from the run directory, never from the working directory, and
    never into another run.

    Runs made before paths were recorded relative to the run stored them relative to wherever ``apply``
    ran (``runs/<name>/model``) or absolute: such a path inside *a* run directory (this one, or the one
    this run was copied from) means the same place inside this run."""
    run_dir = Path(run_dir)
    if not stored:
        return run_dir / default
    p = Path(stored).expanduser()
    if not p.is_absolute():
        for k in range(len(p.parts)):  # 'model', or an old run's 'runs/<name>/model'
            cand = run_dir.joinpath(*p.parts[k:])
            if cand.exists():
                return cand
        return run_dir / p
    owner = _owning_run(p)
    if owner is not None:
        return run_dir / p.relative_to(owner)
    return p


def run_model_dir(run_dir: Path, metrics: dict | None = None) -> Path:
    """The exported model folder of a run, as its ``metrics.json`` recorded it, resolved from the run."""
    if metrics is None:
        metrics = read_metrics(run_dir)
    export = metrics.get("export") if isinstance(metrics.get("export"), dict) else {}
    return resolve_recorded(Path(run_dir), export.get("path"))


def _owning_run(path: Path) -> Path | None:
    """The nearest folder above ``path`` that is a run directory (it holds the run marker)."""
    for parent in path.parents:
        if is_run_dir(parent):
            return parent
    return None


LOCK = ".editkit-lock"


@contextmanager
def run_lock(
    run_dir: Path, command: str, *, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold the run directory for one command: a second command on the same run gets one line and writes
    nothing, or (``wait``) waits its turn. An OS file lock (``flock``): a killed holder releases it.

    Commands take it, not library functions (the pipeline's card stage and ``editkit card`` both call
    ``write_card``; a second lock from the same process would wait for itself). A path that is not a run
    directory is not locked: the command's own check says what is wrong with it."""

    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        yield
        return
    path = run_dir / LOCK
    try:
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the block)
    except OSError as e:
        raise OutputError(f"{path}: cannot open the run's lock file: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(path)
            if not wait:
                raise OutputError(
                    f"{run_dir}: in use by {holder}; wait until it ends or pass --wait to queue behind it"
                ) from None
            if on_wait is not None:
                on_wait(f"{run_dir}: waiting for {holder} to finish")
            fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}))
        fh.flush()
        yield
    finally:
        fh.close()


def _lock_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"`editkit {info['command']}` (pid {info['pid']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another editkit command"
