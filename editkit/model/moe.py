"""Mixture-of-experts layers: fused expert tensors addressed one expert at a time.

transformers (5.x) stores the experts of a MoE layer as 3-D parameters of one module (``mlp.experts``):
``down_proj`` (E, hidden, I) — or (E, I, hidden) where the family stores it transposed (GPT-OSS) — and
``gate_up_proj``. editkit addresses expert ``e``'s down projection as the edit target
``<experts>.<e>.<down>`` (e.g. ``model.layers.3.mlp.experts.5.down_proj``, the name the per-expert
checkpoint format uses too), and :class:`ExpertDown` is that target as a module: a Linear-shaped view
(``weight`` [out, in], ``bias``) of one slice of the fused tensors. Every :mod:`editkit.edit.ops` op works on it
unchanged:

* **merge form**: ``weight``/``bias`` are views into the fused parameters, so reading, merging in fp32 and
  writing back touch that expert's slice only;
* **hook form**: a hook registered on the view makes the experts module compute its output with editkit's
  own loop over the experts (:func:`expert_forward`), which calls each view on the tokens routed to it, so
  the op's own pre-/post-hooks run on exactly that expert's input and output.

The per-family facts (which parameter, transposed or not, bias or not) come from ``_data/architectures.json``
through :class:`ExpertLayout`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ExpertLayout:
    """How one family stores its fused experts (``architectures.json`` → ``moe.<model_type>``)."""

    family: str
    down: str  # the fused down-projection parameter of the experts module
    gate_up: str
    transposed: bool  # stored (E, in, out) instead of (E, out, in)
    down_bias: str | None = None
    gate_up_bias: str | None = None

    @classmethod
    def from_spec(cls, family: str, spec: dict) -> ExpertLayout:
        return cls(
            family=family,
            down=spec["down"],
            gate_up=spec["gate_up"],
            transposed=bool(spec.get("transposed", False)),
            down_bias=spec.get("down_bias"),
            gate_up_bias=spec.get("gate_up_bias"),
        )


_VIEWS: weakref.WeakKeyDictionary[nn.Module, list[ExpertDown]] = weakref.WeakKeyDictionary()
_RECOMPUTE: weakref.WeakKeyDictionary[nn.Module, _Recompute] = weakref.WeakKeyDictionary()


class _Handle:
    """A hook handle that also releases the experts module's recompute when removed."""

    def __init__(self, inner, release):
        self.inner, self.release = inner, release

    def remove(self) -> None:
        if self.inner is not None:
            self.inner.remove()
            self.inner = None
            self.release()


class ExpertDown(nn.Module):
    """Expert ``expert``'s down projection as a Linear-shaped module: ``weight`` [out, in] and ``bias`` are
    views of the fused parameters (writes go into the model), ``forward`` is ``F.linear``.

    ``token_index`` / ``n_tokens``: during :func:`expert_forward`, which of the layer's flattened tokens this
    call serves (hooks that act per batch row, e.g. attribution gates, read them)."""

    def __init__(self, experts: nn.Module, layout: ExpertLayout, expert: int):
        super().__init__()
        object.__setattr__(self, "_experts", weakref.ref(experts))
        self.layout = layout
        self.expert = expert
        self.token_index: torch.Tensor | None = None
        self.n_tokens = 0

    @property
    def experts(self) -> nn.Module:
        mod = self._experts()
        if mod is None:  # pragma: no cover - the model was freed while a view was kept
            raise RuntimeError("the experts module of this view no longer exists")
        return mod

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        w = getattr(self.experts, self.layout.down)[self.expert]
        return w.t() if self.layout.transposed else w

    @property
    def bias(self) -> torch.Tensor | None:  # type: ignore[override]
        if self.layout.down_bias is None:
            return None
        return getattr(self.experts, self.layout.down_bias)[self.expert]

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    # a hook on one expert switches its experts module to editkit's per-expert loop while it is installed
    def register_forward_pre_hook(self, hook, **kwargs):  # type: ignore[override]
        return self._counted(super().register_forward_pre_hook(hook, **kwargs))

    def register_forward_hook(self, hook, **kwargs):  # type: ignore[override]
        return self._counted(super().register_forward_hook(hook, **kwargs))

    def _counted(self, handle) -> _Handle:
        rec = _RECOMPUTE.get(self.experts)
        if rec is None:
            rec = _RECOMPUTE[self.experts] = _Recompute(self.experts, self.layout)
        rec.acquire()
        return _Handle(handle, rec.release)

    def extra_repr(self) -> str:
        return f"expert={self.expert}, in={self.in_features}, out={self.out_features}"


def expert_views(experts: nn.Module, layout: ExpertLayout) -> list[ExpertDown]:
    """One :class:`ExpertDown` per expert of ``experts`` (the same objects on every call)."""
    views = _VIEWS.get(experts)
    if views is None:
        n = getattr(experts, layout.down).shape[0]
        views = _VIEWS[experts] = [ExpertDown(experts, layout, e) for e in range(n)]
    return views


def expert_forward(
    experts: nn.Module,
    layout: ExpertLayout,
    hidden: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    """The experts module's output, expert by expert: gate/up projection, the module's own gating
    (``_apply_gate``: SwiGLU, or GPT-OSS's clamped variant), then the expert's :class:`ExpertDown` view
    (hooks run there), weighted by the router and summed per token."""
    views = expert_views(experts, layout)
    gate_up = getattr(experts, layout.gate_up)
    gate_up_bias = getattr(experts, layout.gate_up_bias) if layout.gate_up_bias else None
    out = torch.zeros_like(hidden)
    for e, view in enumerate(views):
        token_idx, pos = torch.where(top_k_index == e)
        if token_idx.numel() == 0:
            continue
        x = hidden[token_idx]
        if layout.transposed:
            gu = x @ gate_up[e]
        else:
            gu = F.linear(x, gate_up[e])
        if gate_up_bias is not None:
            gu = gu + gate_up_bias[e]
        view.token_index, view.n_tokens = token_idx, hidden.shape[0]
        try:
            y = view(experts._apply_gate(gu))
        finally:
            view.token_index = None
        y = y * top_k_weights[token_idx, pos, None]
        out.index_add_(0, token_idx, y.to(out.dtype))
    return out


class _Recompute:
    """While some view of ``experts`` carries a hook, the module's output is recomputed by
    :func:`expert_forward` (a forward hook replacing the output; removed with the last view hook)."""

    def __init__(self, experts: nn.Module, layout: ExpertLayout):
        self.experts, self.layout, self.count, self.handle = weakref.ref(experts), layout, 0, None

    def acquire(self) -> None:
        if self.count == 0:
            self.handle = self.experts().register_forward_hook(self._hook, with_kwargs=True)
        self.count += 1

    def release(self) -> None:
        self.count -= 1
        if self.count == 0 and self.handle is not None:
            self.handle.remove()
            self.handle = None

    def _hook(self, mod, args, kwargs, output):
        names = ("hidden_states", "top_k_index", "top_k_weights")
        alt = {"top_k_index": "router_indices", "top_k_weights": "routing_weights"}
        vals = list(args[:3])
        for name in names[len(vals) :]:
            vals.append(kwargs[name] if name in kwargs else kwargs[alt[name]])
        return expert_forward(mod, self.layout, *vals)


# ------------------------------------------------------------------------------------------------------
# the merge form on a whole fused tensor (Edit.apply's merged-weights swap)
# ------------------------------------------------------------------------------------------------------


class SwappedExperts:
    """A removable handle: the experts module computes with merged fused tensors until ``remove()``."""

    def __init__(self, experts: nn.Module, tensors: dict[str, torch.Tensor]):
        self.experts = experts
        self.saved = {}
        for attr, t in tensors.items():
            p = getattr(experts, attr)
            self.saved[attr] = p.data
            p.data = t

    def remove(self) -> None:
        for attr, data in self.saved.items():
            getattr(self.experts, attr).data = data
        self.saved = {}


@torch.no_grad()
def swap_in_merged(experts: nn.Module, layout: ExpertLayout, merged: dict[int, tuple]) -> SwappedExperts:
    """``merged``: expert → (merged [out, in] fp32 weight, fp32 bias or None) from ``Edit.merge_tensors``.
    Copies of the fused tensors get those slices (cast to the parameter's dtype) and are swapped in."""
    down = getattr(experts, layout.down).data.clone()
    bias = getattr(experts, layout.down_bias).data.clone() if layout.down_bias else None
    for e, (w, b) in merged.items():
        (down[e].t() if layout.transposed else down[e]).copy_(w.to(down.dtype))
        if b is not None and bias is not None:
            bias[e].copy_(b.to(bias.dtype))
    tensors = {layout.down: down}
    if bias is not None:
        tensors[layout.down_bias] = bias  # type: ignore[index]
    return SwappedExperts(experts, tensors)
