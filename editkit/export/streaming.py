"""Shard-streamed merge: apply a saved Edit to a safetensors checkpoint one tensor at a time.

The model is never instantiated with real weights: each edited module's checkpoint tensors come from the
config alone (:mod:`editkit.export.module_layout`). Every output shard is written tensor by tensor
(:mod:`editkit.export.checkpoint`: the header is planned from the input headers, untouched tensors are
copied byte for byte in chunks), and edited tensors are read, merged with the same fp32 math as
``Edit.merge_into`` (``Edit.merge_tensors`` → each op's ``merge``) and cast back. Peak memory is therefore
the largest edited tensor (a few fp32 copies of it for the merge), not the model. This module holds the
merge itself (:func:`stream_merge`) and when the pipeline streams (:func:`decide_streaming`).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch

from editkit.edit.edit import Edit
from editkit.errors import EditkitError
from editkit.export.checkpoint import (
    _FLOAT_NAMES,
    _ST_DTYPES,
    INDEX_NAME,
    SINGLE_NAME,
    Checkpoint,
    TensorEntry,
    _plan_shards,
    _Planned,
    _write_shard,
    open_checkpoint,
    read_tensor,
)
from editkit.export.module_layout import ModuleLayout, _meta_model, module_layouts
from editkit.export.write import EXPORT_DTYPES, atomic_dir, update_config_dtype

#: ``export.streaming: auto`` streams checkpoints at least this large (bytes of weights on disk).
AUTO_STREAM_BYTES = 2 << 30

# files of a model folder that are weights (rewritten) or must not be carried into the export
_SKIP_FILES = re.compile(
    r".*\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack|onnx)$|.*\.index\.json$|README\.md|\.gitattributes"
)


# ------------------------------------------------------------------------------------------------------
# the merge
# ------------------------------------------------------------------------------------------------------


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
            # targets.weight_out_in's layout (a transposed view for Conv1D, GPT-OSS experts), so the fp32 math
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
