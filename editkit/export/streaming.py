"""Shard-streamed merge: apply a saved Edit to a safetensors checkpoint one tensor at a time.

The model is never instantiated with real weights. Only the module *types* are needed (is a weight stored
[out, in] like ``nn.Linear`` or [in, out] like GPT-2's ``Conv1D``?), and those come from building the
model on the ``meta`` device, which allocates nothing. Every output shard is written tensor by tensor:
the header is planned from the input headers (shapes never change, only the dtype may), untouched tensors
are copied byte for byte in chunks, and edited tensors are read, merged with the same fp32 math as
``Edit.merge_into`` (``Edit.merge_tensors`` → each op's ``merge``) and cast back. Peak memory is therefore
the largest edited tensor (a few fp32 copies of it for the merge), not the model.

Tensors are read with plain ``seek``/``readinto`` rather than a memory map: pages of a mapped file count
towards the process's resident memory until the map is closed, which would make "peak memory" the shard.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from editkit.edit.edit import Edit
from editkit.errors import EditkitError
from editkit.export.write import EXPORT_DTYPES, atomic_dir, update_config_dtype
from editkit.model.anatomy import moe_spec, split_expert_target, target_module
from editkit.model.moe import ExpertDown
from editkit.model.safetensors_header import read_checked_header, read_header  # noqa: F401 (re-exported)

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
COPY_CHUNK = 16 << 20

#: ``export.streaming: auto`` streams checkpoints at least this large (bytes of weights on disk).
AUTO_STREAM_BYTES = 2 << 30

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
# files of a model folder that are weights (rewritten) or must not be carried into the export
_SKIP_FILES = re.compile(
    r".*\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack|onnx)$|.*\.index\.json$|README\.md|\.gitattributes"
)


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
# model layout from the config alone
# ------------------------------------------------------------------------------------------------------


@dataclass
class ModuleLayout:
    """How an edited module's parameters are stored in the checkpoint."""

    weight_key: str
    bias_key: str | None
    transposed: bool  # stored [in, out] (Conv1D, Embedding): the merge works on the transpose
    expert: int | None = None  # a fused expert tensor: the module is slice [expert] of weight (and bias)


def _meta_model(root: Path, trust_remote_code: bool = False):
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(root, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EditkitError(f"{root}/config.json: cannot build the model layout: {first}") from None


def module_layouts(edit: Edit, ckpt: Checkpoint, meta_model) -> dict[str, ModuleLayout]:
    """Map each edited module to its checkpoint tensors; refuse what the merge could not do faithfully."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    emb = meta_model.get_input_embeddings()
    out_emb = meta_model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is emb.weight
    prefix = getattr(meta_model, "base_model_prefix", "") or ""
    layouts = {}
    for name in edit.modules:
        try:
            mod = target_module(meta_model, name)
        except AttributeError:
            raise EditkitError(f"edit targets module '{name}', which this model does not have") from None
        if isinstance(mod, ExpertDown):
            layouts[name] = _expert_layout(name, mod, ckpt, prefix)
            continue
        if tied and (mod is emb or mod is out_emb):
            raise EditkitError(
                f"edit targets the tied embeddings '{name}': editing them would also change the other "
                "side; untie the embeddings or leave embeddings out of the edit"
            )
        w = getattr(mod, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            raise EditkitError(f"edit targets '{name}', which has no 2-D weight")
        candidates = [name]
        if prefix and name.startswith(prefix + "."):
            candidates.append(name[len(prefix) + 1 :])  # checkpoints saved from the base model
        saved = saved_name(meta_model, f"{name}.weight")  # renamed on save (Mixtral's block_sparse_moe.gate)
        if saved is not None and saved != f"{name}.weight":
            candidates.append(saved[: -len(".weight")])
        key = next((c for c in candidates if f"{c}.weight" in ckpt.entries), None)
        if key is None:
            raise EditkitError(f"{ckpt.root}: checkpoint has no tensor '{name}.weight' for the edited module")
        stored = ckpt.entries[f"{key}.weight"].shape
        if list(stored) != list(w.shape):
            raise EditkitError(
                f"{ckpt.root}: '{key}.weight' has shape {stored}, the config says {list(w.shape)}"
            )
        bias = f"{key}.bias" if isinstance(getattr(mod, "bias", None), torch.Tensor) else None
        if bias is not None and bias not in ckpt.entries:
            bias = None
        layouts[name] = ModuleLayout(f"{key}.weight", bias, isinstance(mod, (Conv1D, nn.Embedding)))
    return layouts


def saved_name(meta_model, key: str) -> str | None:
    """The name ``save_pretrained`` gives parameter ``key`` (transformers 5 renames some on save, e.g.
    Mixtral's router ``mlp.gate`` → ``block_sparse_moe.gate``); None when it is not a plain rename."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        t = meta_model.get_parameter(key)
        out = revert_weight_conversion(meta_model, {key: t})
    except Exception:  # noqa: BLE001 - no conversion machinery or not a parameter: keep the name
        return None
    return next(iter(out)) if len(out) == 1 else None


def _expert_layout(name: str, view, ckpt: Checkpoint, prefix: str) -> ModuleLayout:
    """Where one expert's down projection is in the checkpoint: its own [out, in] tensor in the per-expert
    format ``save_pretrained`` writes (``moe.<family>.checkpoint_down`` in the data file), or slice [e] of
    the fused tensor (as the model holds it; GPT-OSS checkpoints store it so)."""
    lay = view.layout
    experts, e, _ = split_expert_target(name)  # type: ignore[misc]
    out_in = list(view.weight.shape)
    fused_shape = [getattr(view.experts, lay.down).shape[0], *(out_in[::-1] if lay.transposed else out_in)]
    cands: list[tuple[str, int | None, bool, list[int]]] = []
    per_expert = (moe_spec(lay.family) or {}).get("checkpoint_down")
    layer = re.fullmatch(r"(.*\.\d+)\.[^.]+\.[^.]+", experts)
    if per_expert and layer:
        cands.append((f"{layer.group(1)}.{per_expert.format(e=e)}", None, False, out_in))
    cands.append((f"{experts}.{lay.down}", e, lay.transposed, fused_shape))
    for key, expert, transposed, shape in cands:
        for k in (key, key[len(prefix) + 1 :] if prefix and key.startswith(prefix + ".") else None):
            if k is None or k not in ckpt.entries:
                continue
            if ckpt.entries[k].shape != shape:
                raise EditkitError(
                    f"{ckpt.root}: '{k}' has shape {ckpt.entries[k].shape}, the config says {shape}"
                )
            bias = None
            if lay.down_bias:
                bias = k[: -len(lay.down)] + lay.down_bias if expert is not None else None
                if bias not in ckpt.entries:
                    raise EditkitError(
                        f"{ckpt.root}: no bias tensor for expert {e} of '{experts}' beside '{k}'; "
                        "cannot merge its edit exactly"
                    )
            return ModuleLayout(k, bias, transposed, expert)
    raise EditkitError(
        f"{ckpt.root}: checkpoint has neither '{cands[0][0]}' nor the fused '{cands[-1][0]}' "
        f"for the edited expert {name}"
    )


# ------------------------------------------------------------------------------------------------------
# the merge
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


class _Merger:
    """``produce(planned)`` for :func:`_write_shard`: the merged tensor of an edited weight or bias, a cast
    copy of a tensor whose dtype changes, else None (copied byte for byte). Keeps the per-module norms."""

    def __init__(
        self, edit: Edit, ckpt: Checkpoint, layouts: dict[str, ModuleLayout], total: int, progress, via
    ):
        self.edit, self.ckpt, self.layouts, self.total, self.progress = edit, ckpt, layouts, total, progress
        self.via = via  # the dtype the in-memory model holds floating tensors in (None: as stored)
        # a checkpoint tensor may hold several edited modules (the experts of a fused tensor)
        self.by_weight: dict[str, list[tuple[str, ModuleLayout]]] = {}
        self.bias_of: dict[str, str] = {}  # bias key -> the weight key merged with it
        for name, lay in layouts.items():
            self.by_weight.setdefault(lay.weight_key, []).append((name, lay))
            if lay.bias_key:
                self.bias_of[lay.bias_key] = lay.weight_key
        self.merged_bias: dict[str, torch.Tensor] = {}
        self.bias_done: set[str] = set()
        self.norms: dict[str, float] = {}
        self.done = 0

    def __call__(self, p: _Planned) -> torch.Tensor | None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)
        e, out_dt = p.entry, _ST_DTYPES[p.dtype]
        if e.name in self.by_weight:
            return self._weight(e).to(out_dt)
        if e.name in self.bias_of:
            return self._bias(e).to(out_dt)
        if p.dtype != e.dtype or (
            self.via is not None and e.dtype in _FLOAT_NAMES and _ST_DTYPES[e.dtype] != self.via
        ):
            return self.read(e).to(out_dt)
        return None

    def read(self, entry: TensorEntry) -> torch.Tensor:
        t = read_tensor(entry)
        return t.to(self.via) if self.via is not None and entry.dtype in _FLOAT_NAMES else t

    def _weight(self, e: TensorEntry) -> torch.Tensor:
        return self._merge(e.name)

    def _merge(self, key: str) -> torch.Tensor:
        """Merge every module stored in checkpoint tensor ``key`` (one, or the experts of a fused tensor):
        returns the merged tensor; merged biases go to ``merged_bias`` until their turn comes."""
        stored = self.read(self.ckpt.entries[key])  # fresh memory, ours to reuse: merged in place
        biases: dict[str, torch.Tensor] = {}
        for name, lay in self.by_weight[key]:
            part = stored if lay.expert is None else stored[lay.expert]
            # anatomy.weight_out_in's layout (a transposed view for Conv1D, GPT-OSS experts), so the fp32 math
            # is identical; for fp32 checkpoints w0 *is* the read buffer (no copy: peak ≈ 5× the tensor)
            w0 = (part.t() if lay.transposed else part).to(torch.float32)
            b = None
            if lay.bias_key:
                if lay.bias_key not in biases:
                    biases[lay.bias_key] = self.read(self.ckpt.entries[lay.bias_key])
                full = biases[lay.bias_key]
                b = (full if lay.expert is None else full[lay.expert]).to(torch.float32).clone()
            w, b = self.edit.merge_tensors(name, w0.clone(), b)
            self.norms[name] = float((w - w0).norm())
            if b is not None:
                (full if lay.expert is None else full[lay.expert]).copy_(b.to(full.dtype))
            (part.t() if lay.transposed else part).copy_(w.to(stored.dtype))
            del w0, w
        for bkey, merged in biases.items():
            if bkey not in self.bias_done:
                self.merged_bias[bkey] = merged
        return stored

    def _bias(self, e: TensorEntry) -> torch.Tensor:
        if e.name not in self.merged_bias:  # bias stored before its weight: merge the module(s) now
            self._merge(self.bias_of[e.name])
        self.bias_done.add(e.name)
        return self.merged_bias.pop(e.name)


def _write_checkpoint(tmp: Path, src: Path, ckpt: Checkpoint, shards, produce, target: str | None) -> int:
    """The shards (and index), and the source folder's other files; returns the bytes of tensor data."""
    written = 0
    weight_map: dict[str, str] = {}
    for fname, group in shards:
        meta = dict(ckpt.file_metadata.get(ckpt.files[0], {}) or {"format": "pt"})
        meta.setdefault("format", "pt")
        written += _write_shard(tmp / fname, group, meta, produce)
        weight_map.update({p.entry.name: fname for p in group})
    if len(shards) > 1:
        idx_meta = dict(ckpt.index_metadata)
        idx_meta["total_size"] = written
        (tmp / INDEX_NAME).write_text(
            json.dumps({"metadata": idx_meta, "weight_map": dict(sorted(weight_map.items()))}, indent=2)
            + "\n"
        )
    for f in sorted(src.iterdir()):
        if f.is_file() and not _SKIP_FILES.fullmatch(f.name):
            shutil.copy2(f, tmp / f.name)
    update_config_dtype(tmp / "config.json", target)
    return written


@torch.no_grad()
def stream_merge(
    edit: Edit,
    src: str | Path,
    dest: str | Path,
    *,
    dtype: Literal["same", "float32", "bfloat16", "float16"] = "same",
    max_shard_size: str | int | None = None,
    extra: Callable[[Path], None] | None = None,
    trust_remote_code: bool = False,
    progress: Callable[[int, int], None] | None = None,
    load_dtype: str | None = None,
) -> dict[str, Any]:
    """Merge ``edit`` into the checkpoint folder ``src`` and write the result to ``dest`` (atomically).

    ``load_dtype`` (float32/bfloat16/float16) is the dtype the in-memory model holds the weights in: each
    floating tensor is first cast to it, as ``from_pretrained(dtype=...)`` does, so the streamed export is
    bit-identical to merging the loaded model in memory (an fp32 checkpoint edited in bf16 rounds to bf16
    before the merge, not only after it).

    ``dtype`` 'same' keeps every tensor's stored dtype; otherwise floating tensors are cast (after the
    fp32 merge, exactly like the in-memory export). ``max_shard_size`` None keeps the input's shards and
    their names. Config, tokenizer and generation files are copied; ``extra(tmpdir)`` may add more before
    the rename. Returns path, files, per-module Δ‖W‖_F ("norms"), bytes written and seconds.
    """
    t0 = time.time()
    src, dest = Path(src), Path(dest)
    if src.resolve() == dest.resolve():
        raise EditkitError(f"{dest}: the streamed export cannot overwrite its own source checkpoint")
    if dtype != "same" and dtype not in EXPORT_DTYPES:
        raise EditkitError(f"export.dtype: unknown dtype {dtype!r}")
    target = EXPORT_DTYPES.get(dtype)
    if load_dtype not in (None, "same", "auto") and load_dtype not in EXPORT_DTYPES:
        raise EditkitError(f"model.dtype: unknown dtype {load_dtype!r}")
    via = _ST_DTYPES[EXPORT_DTYPES[load_dtype]] if load_dtype in EXPORT_DTYPES else None
    ckpt = open_checkpoint(src)
    layouts = module_layouts(edit, ckpt, _meta_model(src, trust_remote_code))
    shards = _plan_shards(ckpt, target, max_shard_size)
    merger = _Merger(edit, ckpt, layouts, sum(len(g) for _, g in shards), progress, via)
    with atomic_dir(dest, needed=sum(p.nbytes for _, g in shards for p in g)) as tmp:
        written = _write_checkpoint(tmp, src, ckpt, shards, merger, target)
        if extra is not None:
            extra(tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    return {
        "path": str(dest),
        "files": files,
        "norms": merger.norms,
        "bytes_written": written,
        "seconds": round(time.time() - t0, 3),
        "streaming": True,
    }


# ------------------------------------------------------------------------------------------------------
# when to stream (export.streaming: auto | true | false)
# ------------------------------------------------------------------------------------------------------


def _has_weights(folder: Path) -> bool:
    return (folder / SINGLE_NAME).exists() or (folder / INDEX_NAME).exists()


def checkpoint_folder(source: str, revision: str | None = None, download: bool = False) -> Path | None:
    """The local safetensors folder of a model source, or None (GGUF, pickle, not cached).

    A local folder is itself; a Hub id is its cached snapshot (with ``download``: fetched with
    huggingface_hub when not cached yet — the weights and tokenizer files only)."""
    if str(source).endswith(".gguf"):
        return None
    p = Path(str(source)).expanduser()
    if p.exists():
        return p if p.is_dir() and _has_weights(p) else None
    try:
        from huggingface_hub import snapshot_download, try_to_load_from_cache

        hit = try_to_load_from_cache(str(source), "config.json", revision=revision)
        if isinstance(hit, str):
            snap = Path(hit).parent
        elif download:
            patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
            snap = Path(snapshot_download(str(source), revision=revision, allow_patterns=patterns))
        else:
            return None
    except Exception as e:  # noqa: BLE001 - lookups fail quietly; a download failure is the user's to see
        if download:
            raise EditkitError(f"model.id: could not fetch {source}: {str(e).splitlines()[0]}") from None
        return None
    return snap if _has_weights(snap) else None


def checkpoint_dir(loaded) -> Path | None:
    """The local safetensors folder a LoadedModel was read from, or None (GGUF, pickle, quantised, not cached)."""
    if getattr(loaded.model, "is_loaded_in_4bit", False) or getattr(loaded.model, "is_loaded_in_8bit", False):
        return None
    if str(loaded.source).endswith(".gguf"):
        return None
    return checkpoint_folder(str(loaded.path))


def _dispatched(model) -> bool:
    devmap = getattr(model, "hf_device_map", None) or {}
    return len(set(map(str, devmap.values()))) > 1 or any(str(v) in ("cpu", "disk") for v in devmap.values())


def decide_streaming(
    setting: bool | str, loaded, threshold_bytes: int = AUTO_STREAM_BYTES
) -> tuple[bool, str]:
    """(stream?, why). 'auto' streams a local safetensors checkpoint that is ≥ ``threshold_bytes`` or
    whose model is spread over devices/offloaded; true insists (error if impossible); false never."""
    if setting is False or setting == "false":
        return False, "export.streaming is false"
    ckpt = checkpoint_dir(loaded)
    if ckpt is None:
        if setting is True or setting == "true":
            raise EditkitError(
                f"export.streaming: true needs a local safetensors checkpoint; {loaded.source} "
                "is not one (GGUF, pickle or quantised); set export.streaming: auto or false"
            )
        return False, "base model is not a local safetensors checkpoint"
    if setting is True or setting == "true":
        return True, "export.streaming is true"
    if _dispatched(loaded.model):
        return True, "model is dispatched over several devices / offloaded"
    size = open_checkpoint(ckpt).total_bytes
    if size >= threshold_bytes:
        return True, f"checkpoint is {size / 2**30:.2f} GiB ≥ {threshold_bytes / 2**30:.2f} GiB"
    return False, f"checkpoint is {size / 2**30:.2f} GiB < {threshold_bytes / 2**30:.2f} GiB"


def stream_export_run(
    edit: Edit, loaded, dest: Path, export_spec, extra=None, trust_remote_code: bool = False
) -> dict[str, Any]:
    """The pipeline's streamed export: same dtype semantics as ``export_model`` ('same' = the loaded
    model's dtype), the recipe's shard size, the base checkpoint as source."""
    src = checkpoint_dir(loaded)
    if src is None:
        raise EditkitError(f"model.id: {loaded.source} is not a local safetensors checkpoint; cannot stream")
    own = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(
        next(loaded.model.parameters()).dtype, "same"
    )
    dtype = own if export_spec.dtype == "same" else export_spec.dtype
    return stream_merge(
        edit,
        src,
        dest,
        dtype=dtype,
        max_shard_size=export_spec.max_shard_size,
        extra=extra,
        trust_remote_code=trust_remote_code,
        load_dtype=own,
    )
