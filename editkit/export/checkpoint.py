"""Safetensors checkpoints read, planned and written by hand (header + raw little-endian bytes).

:func:`open_checkpoint` indexes a model folder's tensors (``model.safetensors`` or an index + shards) from
their headers, :func:`read_tensor` reads one tensor into fresh memory, :func:`_plan_shards` lays the
tensors out over the output shards (shapes never change, only the dtype may) and :func:`_write_shard`
writes one shard tensor by tensor, copying untouched tensors byte for byte in chunks. Tensors are read
with plain ``seek``/``readinto`` rather than a memory map: pages of a mapped file count towards the
process's resident memory until the map is closed, which would make "peak memory" the shard.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from editkit.errors import EditkitError
from editkit.model.safetensors_header import read_checked_header

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
COPY_CHUNK = 16 << 20

_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}
_FLOAT_NAMES = {"F64", "F32", "F16", "BF16"}


# ------------------------------------------------------------------------------------------------------
# safetensors files, read and written by hand (header + raw little-endian bytes)
# ------------------------------------------------------------------------------------------------------


@dataclass
class TensorEntry:
    """Where one tensor lives in an input file."""

    name: str
    file: Path
    dtype: str  # safetensors dtype name, e.g. "F32"
    shape: list[int]
    start: int  # absolute byte offset in ``file``
    nbytes: int


@dataclass
class Checkpoint:
    """The tensors of a (sharded) safetensors checkpoint, in file and offset order."""

    root: Path
    files: list[Path]
    entries: dict[str, TensorEntry]
    file_metadata: dict[Path, dict[str, str]] = field(default_factory=dict)
    index_metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self.entries.values())

    def by_file(self) -> dict[Path, list[TensorEntry]]:
        out: dict[Path, list[TensorEntry]] = {f: [] for f in self.files}
        for e in self.entries.values():
            out[e.file].append(e)
        for lst in out.values():
            lst.sort(key=lambda e: e.start)
        return out


def open_checkpoint(root: str | Path) -> Checkpoint:
    """Index a model folder's safetensors weights (``model.safetensors`` or an index + shards)."""
    root = Path(root)
    index = root / INDEX_NAME
    index_meta: dict[str, Any] = {}
    if index.exists():
        spec = json.loads(index.read_text())
        index_meta = dict(spec.get("metadata") or {})
        names = list(dict.fromkeys(spec["weight_map"].values()))
    elif (root / SINGLE_NAME).exists():
        names = [SINGLE_NAME]
    else:
        raise EditkitError(f"{root}: has no {SINGLE_NAME} or {INDEX_NAME} (streaming needs safetensors)")
    files = [root / n for n in names]
    entries: dict[str, TensorEntry] = {}
    file_meta: dict[Path, dict[str, str]] = {}
    for path in files:
        if not path.exists():
            raise EditkitError(f"{index}: names shard {path.name}, which does not exist")
        header, data_start = read_checked_header(path)
        file_meta[path] = dict(header.pop("__metadata__", None) or {})
        for name, h in header.items():
            if h["dtype"] not in _ST_DTYPES:
                raise EditkitError(f"{path}: tensor {name} has dtype {h['dtype']} editkit cannot stream")
            s, e = h["data_offsets"]
            entries[name] = TensorEntry(name, path, h["dtype"], list(h["shape"]), data_start + s, e - s)
    return Checkpoint(root, files, entries, file_meta, index_meta)


def read_tensor(entry: TensorEntry) -> torch.Tensor:
    """Read one tensor into fresh memory (no memory map)."""
    dtype = _ST_DTYPES[entry.dtype]
    if entry.nbytes == 0:
        return torch.empty(entry.shape, dtype=dtype)
    buf = bytearray(entry.nbytes)
    with open(entry.file, "rb") as f:
        f.seek(entry.start)
        if f.readinto(buf) != entry.nbytes:
            raise EditkitError(f"{entry.file}: truncated while reading {entry.name}")
    return torch.frombuffer(buf, dtype=dtype).reshape(entry.shape)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.contiguous().reshape(-1).view(torch.uint8).numpy())


def _copy_range(src: Path, start: int, nbytes: int, out) -> None:
    with open(src, "rb") as f:
        f.seek(start)
        left = nbytes
        while left:
            chunk = f.read(min(COPY_CHUNK, left))
            if not chunk:
                raise EditkitError(f"{src}: truncated")
            out.write(chunk)
            left -= len(chunk)


@dataclass
class _Planned:
    entry: TensorEntry
    dtype: str  # output dtype name
    nbytes: int


def _out_dtype(st_dtype: str, target: str | None) -> str:
    return target if target is not None and st_dtype in _FLOAT_NAMES else st_dtype


def _write_shard(
    path: Path,
    tensors: list[_Planned],
    metadata: dict[str, str],
    produce: Callable[[_Planned], torch.Tensor | None],
) -> int:
    """Write one safetensors file tensor by tensor; ``produce`` returns a new tensor or None (copy bytes)."""
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    off = 0
    for p in tensors:
        header[p.entry.name] = {
            "dtype": p.dtype,
            "shape": p.entry.shape,
            "data_offsets": [off, off + p.nbytes],
        }
        off += p.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for p in tensors:
            new = produce(p)
            if new is None:
                _copy_range(p.entry.file, p.entry.start, p.entry.nbytes, f)
            else:
                mv = _tensor_bytes(new)
                if mv.nbytes != p.nbytes:
                    raise RuntimeError(f"{p.entry.name}: produced {mv.nbytes} bytes, planned {p.nbytes}")
                f.write(mv)
                del new, mv
    return off


def parse_size(size: str | int) -> int:
    """'500MB' → 500·10⁶, '2GiB' → 2·2³⁰ (the convention of transformers' max_shard_size)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)\s*", size, flags=re.IGNORECASE)
    if not m:
        raise EditkitError(f"max_shard_size: {size!r} should look like '500MB' or '2GB'")
    unit = m.group(2).upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}
    return int(float(m.group(1)) * mult[unit])


# ------------------------------------------------------------------------------------------------------
# the output shards, planned from the input headers
# ------------------------------------------------------------------------------------------------------


def _plan_shards(ckpt: Checkpoint, target: str | None, max_shard_size: str | int | None):
    """Output shards as (name, [planned tensors]); None keeps the input sharding and names."""

    def planned(e: TensorEntry) -> _Planned:
        dt = _out_dtype(e.dtype, target)
        n = e.nbytes if dt == e.dtype else e.nbytes // _ST_DTYPES[e.dtype].itemsize * _ST_DTYPES[dt].itemsize
        return _Planned(e, dt, n)

    groups: list[list[_Planned]]
    if max_shard_size is None:
        groups = [[planned(e) for e in lst] for lst in ckpt.by_file().values()]
        names = [f.name for f in ckpt.files]
        return list(zip(names, groups, strict=True))
    limit = parse_size(max_shard_size)
    groups, cur, size = [], [], 0
    for lst in ckpt.by_file().values():
        for e in lst:
            p = planned(e)
            if cur and size + p.nbytes > limit:
                groups.append(cur)
                cur, size = [], 0
            cur.append(p)
            size += p.nbytes
    if cur or not groups:
        groups.append(cur)
    n = len(groups)
    if n == 1:
        return [(SINGLE_NAME, groups[0])]
    return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", g) for i, g in enumerate(groups)]
