"""Reading a run's event log: the incremental JSONL tailer and finding the logs on disk.

`EventTailer` reads only what was appended to an ``events.jsonl`` since its last call, keeps a half-written
last line until its newline arrives and starts over when the file is replaced; `has_events_file` and
`find_runs` say which folders hold such a log. No Textual import and no knowledge of event types: folding
the events into a run's state is `editkit_tui.state`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"


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
