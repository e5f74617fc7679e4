"""The JSON header of a .safetensors file, read and checked against the file before any tensor is.

A truncated file, or a header that claims more bytes (terabytes) than the file holds, is one line naming
the file, never an allocation or a traceback from deep inside a reader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from editkit.errors import EditkitError

#: a real header is kilobytes; safetensors itself refuses more than 100 MB
MAX_HEADER = 100 << 20


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a .safetensors file and the offset where its data starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise EditkitError(f"{path}: damaged or not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER:
            raise EditkitError(f"{path}: damaged or not a safetensors file (header length {n})")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise EditkitError(
                f"{path}: damaged or truncated, or not a safetensors file (unreadable header)"
            ) from None
    if not isinstance(header, dict):
        raise EditkitError(f"{path}: damaged or not a safetensors file (header is not a mapping)")
    return header, 8 + n


def read_checked_header(path: Path) -> tuple[dict[str, Any], int]:
    """``read_header``, plus: every tensor's data lies inside the file (damaged or truncated files fail)."""
    path = Path(path)
    header, start = read_header(path)
    size = path.stat().st_size
    for name, h in header.items():
        if name == "__metadata__":
            continue
        try:
            s, e = (int(x) for x in h["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise EditkitError(f"{path}: damaged: tensor {name} has no valid data offsets") from None
        if not 0 <= s <= e or start + e > size:
            raise EditkitError(
                f"{path}: damaged or truncated: tensor {name} claims bytes {s}..{e} of its data, "
                f"the file holds {size - start}"
            )
    return header, start
