"""``editkit export`` as a library call: re-export a finished run's edit and rewrite its card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editkit.export.reexport import reexport_run
from editkit.publish.card import refresh_card


def reexport(
    run_dir: str | Path, dest: str | Path | None = None, streaming: bool = False, gguf: str | None = None
) -> dict[str, Any]:
    """Apply ``run_dir/edit`` to the run's base model and export it to ``dest`` (default: the run's own
    export folder), in memory or shard-streamed, with GGUF files of ``gguf`` (comma-separated types); then
    write the new export's files into metrics.json (when it is the run's own folder) and its card again, so
    the card never lists the previous export's files. Returns the export's record (path, files, gguf...)."""
    info = reexport_run(run_dir, dest=dest, streaming=streaming, gguf=gguf)
    refresh_card(run_dir, info)
    return info
