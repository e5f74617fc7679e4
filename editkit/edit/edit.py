"""The Edit: the one type every method returns.

An edit is an ordered list of operations on named modules. Each operation can be

* applied in memory, reversibly, with forward hooks (for evaluation and for the export check),
* merged into the weights (fp32 math, cast back to the module's dtype),
* saved as an artifact (``edit.json`` + ``tensors.safetensors``) and re-applied to the base model.

The hook form and the merged form are two independent implementations of the same map; the export check
compares them (max-abs logit diff), so a bug in either shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.pytorch_utils import Conv1D

from editkit.edit.ops import (  # noqa: F401 - re-exported: ``from editkit.edit.edit import LowRank`` keeps working
    OPS,
    EditOp,
    LowRank,
    NormPreservingProjectOut,
    ProjectOut,
    ScaleInputs,
    register_op,
)
from editkit.errors import EditkitError, disk_full_error, disk_full_reason
from editkit.model.moe import ExpertDown, swap_in_merged
from editkit.model.safetensors_header import read_checked_header
from editkit.model.targets import set_weight_out_in, target_module, weight_out_in

FORMAT = "editkit-edit"
FORMAT_VERSION = 1


class _MergedWeights:
    """A removable handle: ``mod.weight`` (and bias) hold merged values until ``remove()`` restores them."""

    def __init__(self, mod: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        self.mod = mod
        self.saved = {"weight": mod.weight.data}
        mod.weight.data = weight.to(device=mod.weight.device, dtype=mod.weight.dtype)
        if bias is not None:
            self.saved["bias"] = mod.bias.data
            mod.bias.data = bias.to(device=mod.bias.device, dtype=mod.bias.dtype)

    def remove(self) -> None:
        for key, data in self.saved.items():
            getattr(self.mod, key).data = data
        self.saved = {}


@dataclass
class Edit:
    """What a method changed. ``info`` says where (heads, neurons, layers...) for metrics and the card."""

    method: str
    ops: list[EditOp]
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        kinds: dict[str, str] = {}
        for op in self.ops:
            if kinds.setdefault(op.module, op.kind) != op.kind:
                raise ValueError(
                    f"edit has both {kinds[op.module]} and {op.kind} on {op.module}; "
                    "merge one edit before applying the next"
                )

    @property
    def modules(self) -> list[str]:
        return list(dict.fromkeys(op.module for op in self.ops))

    def _check(self, model: nn.Module) -> None:
        emb = model.get_input_embeddings()
        out = model.get_output_embeddings()
        tied = out is not None and out.weight.data_ptr() == emb.weight.data_ptr()
        for name in self.modules:
            try:
                mod = target_module(model, name)
            except AttributeError:
                raise EditkitError(f"edit targets module '{name}', which this model does not have") from None
            if tied and mod is emb:
                raise EditkitError(
                    f"edit targets the tied input embeddings '{name}': editing them would also change the "
                    "output head; untie the embeddings or leave embeddings out of the edit"
                )

    # -- in memory ----------------------------------------------------------------------------------
    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``with edit.applied(model): ...`` — hooks on, removed on exit (also on exceptions)."""
        handles = self.apply(model)
        try:
            yield model
        finally:
            for h in handles:
                h.remove()

    def apply(self, model: nn.Module) -> list[Any]:
        """Install the hooks; remove them with ``for h in handles: h.remove()``."""
        self._check(model)
        handles = []
        experts: dict[int, tuple[nn.Module, Any, dict]] = {}
        for name in self.modules:
            mod = target_module(model, name)
            ops = [op for op in self.ops if op.module == name]
            if isinstance(mod, ExpertDown):  # fused experts: merged slices swapped in (below), any op kind
                group = experts.setdefault(id(mod.experts), (mod.experts, mod.layout, {}))
                group[2][mod.expert] = self._merged(name, mod)
            elif _swappable(mod) and all(op.recompute for op in ops):
                handles.append(self._swap_in_merged(name, mod))
            else:
                for op in ops:
                    handles += op.hook(mod)
        handles += [swap_in_merged(mod, layout, merged) for mod, layout, merged in experts.values()]
        return handles

    @torch.no_grad()
    def _merged(self, name: str, mod: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        bias = getattr(mod, "bias", None)
        b0 = bias.detach().to(torch.float32).clone() if isinstance(bias, torch.Tensor) else None
        return self.merge_tensors(name, weight_out_in(mod), b0)

    @torch.no_grad()
    def _swap_in_merged(self, name: str, mod: nn.Module) -> _MergedWeights:
        """Let ``mod`` compute with its merged weight (fp32 merge, cast to its dtype) until the handle is removed.

        Dense weight-space edits (LoRA deltas, projections) applied as separate corrections differ from the
        merged export by fp32 rounding (~1e-4 in the demo model's logits after 210 modules); computing with the
        merged weights makes what is evaluated the same map as what is exported, at the cost of one forward
        (not two) per module. The original tensors are kept (one extra copy of the edited modules) and put
        back by ``remove()``.
        """
        w, b = self._merged(name, mod)
        if isinstance(mod, Conv1D):
            w = w.t()
        return _MergedWeights(mod, w.contiguous(), b)

    # -- in weights ---------------------------------------------------------------------------------
    @torch.no_grad()
    def merge_tensors(
        self, name: str, w: torch.Tensor, b: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply this edit's ops on module ``name`` to an [out, in] fp32 weight (and fp32 bias), in order.

        The one place the merge math is applied: ``merge_into`` (a loaded model) and the shard-streamed
        merge (``editkit.export.streaming``, tensors read from a checkpoint) both call it, so they agree bit for bit.
        """
        for op in self.ops:
            if op.module == name:
                shape = tuple(w.shape)
                try:
                    w, b = op.merge(w, b)
                except RuntimeError as e:  # tensors of another model, or a damaged artifact
                    raise EditkitError(
                        f"edit operation {op.kind} on '{name}' does not fit its weight {shape} "
                        f"({str(e).splitlines()[0]}): the edit artifact belongs to another model or is damaged"
                    ) from None
                if tuple(w.shape) != shape:
                    raise EditkitError(
                        f"edit operation {op.kind} on '{name}' turned its weight {shape} into "
                        f"{tuple(w.shape)}: the edit artifact belongs to another model or is damaged"
                    )
        return w, b

    @torch.no_grad()
    def merge_into(self, model: nn.Module) -> dict[str, float]:
        """Merge into the weights in place (fp32 math, cast back). Returns the per-module Δ‖W‖_F."""
        self._check(model)
        norms: dict[str, float] = {}
        for name in self.modules:
            mod = target_module(model, name)
            w0 = weight_out_in(mod)
            bias = getattr(mod, "bias", None)
            b = bias.detach().to(torch.float32).clone() if isinstance(bias, torch.Tensor) else None
            w, b = self.merge_tensors(name, w0.clone(), b)
            set_weight_out_in(mod, w)
            if b is not None:
                bias.copy_(b.to(bias.dtype))
            norms[name] = float((w - w0).norm())
        return norms

    def delta_norms(self, model: nn.Module) -> dict[str, float]:
        """Per-module Frobenius norm of the weight change, without touching the model."""
        out = {}
        for name in self.modules:
            w0 = weight_out_in(target_module(model, name))
            w, _ = self.merge_tensors(name, w0.clone(), None)
            out[name] = float((w - w0).norm())
        return out

    # -- artifact -----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        seen: set[int] = set()
        ops = []
        for i, op in enumerate(self.ops):
            keys = {}
            for k, t in op.tensors().items():
                key = f"op{i}.{k}"
                t = t.detach().cpu().contiguous()
                # ops may share one tensor (one direction for all writers); safetensors refuses that
                if t.numel() and t.untyped_storage().data_ptr() in seen:
                    t = t.clone()
                seen.add(t.untyped_storage().data_ptr())
                tensors[key] = t
                keys[k] = key
            ops.append({"kind": op.kind, "module": op.module, "params": op.params(), "tensors": keys})
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": self.method,
            "info": self.info,
            "ops": ops,
        }
        # both files to temporary names first, then renamed (edit.json last): a kill or a full disk leaves
        # the previous artifact or the new one, never a new edit.json beside torn tensors
        tmp_json, tmp_tensors = d / ".edit.json.tmp", d / ".tensors.safetensors.tmp"
        try:
            tmp_json.write_text(json.dumps(meta, indent=1, default=_json_default))
            save_file(tensors, str(tmp_tensors), metadata={"format": FORMAT})
        except Exception as e:
            tmp_json.unlink(missing_ok=True)
            tmp_tensors.unlink(missing_ok=True)
            if disk_full_reason(e):
                raise disk_full_error(
                    e, d, sum(t.numel() * t.element_size() for t in tensors.values())
                ) from None
            raise
        tmp_tensors.replace(d / "tensors.safetensors")
        tmp_json.replace(d / "edit.json")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Edit:
        d = Path(directory)
        meta_path = d / "edit.json"
        if not meta_path.exists():
            raise EditkitError(f"{d}: not an editkit edit artifact (no edit.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EditkitError(f"{meta_path}: damaged: not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            fmt = meta.get("format") if isinstance(meta, dict) else None
            raise EditkitError(f"{meta_path}: not an editkit edit (format {fmt!r})")
        tpath = d / "tensors.safetensors"
        tensors = _load_tensors(tpath) if tpath.exists() else {}
        ops = []
        try:
            for spec in meta["ops"]:
                op_cls = OPS.get(spec["kind"])
                if op_cls is None:
                    raise EditkitError(
                        f"{meta_path}: unknown edit operation '{spec['kind']}' (newer editkit?)"
                    )
                missing = [key for key in spec.get("tensors", {}).values() if key not in tensors]
                if missing:
                    raise EditkitError(
                        f"{meta_path}: names tensor {missing[0]}, which {tpath.name} does not hold "
                        "(the two files do not belong together)"
                    )
                ts = {k: tensors[key] for k, key in spec.get("tensors", {}).items()}
                ops.append(op_cls.from_parts(spec["module"], spec.get("params", {}), ts))
            return cls(method=meta["method"], ops=ops, info=meta.get("info", {}))
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise EditkitError(f"{meta_path}: damaged: {type(e).__name__} {e}".splitlines()[0]) from None


def _swappable(mod: nn.Module) -> bool:
    """Computes ``x Wᵀ (+ b)`` with a 2-D ``weight``: Linear, Conv1D, and routers (a weight, no Linear)."""
    w = getattr(mod, "weight", None)
    return isinstance(mod, (nn.Linear, Conv1D)) or (
        isinstance(w, torch.Tensor) and w.dim() == 2 and not isinstance(mod, nn.Embedding)
    )


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The artifact's tensors, or one line when the file is damaged (truncated, a header that claims more
    than the file holds): the header is checked against the file size before anything is read."""
    read_checked_header(path)
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors' own checks (SafetensorError)
        raise EditkitError(f"{path}: damaged: {str(e).splitlines()[0]}") from None


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
