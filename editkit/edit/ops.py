"""Edit operations: the kinds of change an :class:`~editkit.edit.edit.Edit` is made of.

Each op has two independent implementations of one map: ``hook`` (in memory, reversible) and ``merge`` (into
an [out, in] fp32 weight). Every op kind lives here, so ``Edit.load`` finds it whatever else was imported;
a new kind is one ``@register_op`` class in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from editkit.model.targets import in_out_features, weight_out_in

OPS: dict[str, type[EditOp]] = {}


def register_op(cls: type[EditOp]) -> type[EditOp]:
    """Class decorator: make ``cls`` loadable by its ``kind`` (keys of the saved ``edit.json``)."""
    OPS[cls.kind] = cls
    return cls


@dataclass
class EditOp:
    """One operation on one module. Subclasses define hook() and merge()."""

    kind: ClassVar[str]
    #: applied in memory by recomputing the module's output with merged weights (see Edit.apply)
    recompute: ClassVar[bool] = False
    module: str

    # in memory --------------------------------------------------------------------------------------
    def hook(self, module: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
        raise NotImplementedError

    # in weights -------------------------------------------------------------------------------------
    def merge(self, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the new ([out, in] fp32 weight, fp32 bias or None)."""
        raise NotImplementedError

    def delta_norm(self, w: torch.Tensor) -> float:
        """Frobenius norm of the weight change this op makes to ``w`` ([out, in] fp32)."""
        new, _ = self.merge(w.clone(), None)
        return float((new - w).norm())

    # serialisation ----------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_parts(cls, module: str, params: dict[str, Any], tensors: dict[str, torch.Tensor]) -> EditOp:
        return cls(module=module, **params, **tensors)


@register_op
@dataclass
class ScaleInputs(EditOp):
    """Multiply selected input features of a module by ``factor`` (0 = knock out).

    Zeroing o_proj input columns [h·d, (h+1)·d) removes query head h (exact and GQA-safe); zeroing
    down_proj input column j erases MLP neuron j.
    """

    kind: ClassVar[str] = "scale_inputs"
    index: list[int] = field(default_factory=list)
    factor: float = 0.0

    def _mask(self, n: int, dtype, device) -> torch.Tensor:
        m = torch.ones(n, dtype=dtype, device=device)
        m[torch.as_tensor(self.index, dtype=torch.long, device=device)] = self.factor
        return m

    def hook(self, module):
        n_in, _ = in_out_features(module)

        def pre(mod, args):
            x = args[0]
            return (x * self._mask(n_in, x.dtype, x.device),) + tuple(args[1:])

        return [module.register_forward_pre_hook(pre)]

    def merge(self, w, b):
        w[:, torch.as_tensor(self.index, dtype=torch.long)] *= self.factor
        return w, b

    def params(self):
        return {"index": [int(i) for i in self.index], "factor": float(self.factor)}


@register_op
@dataclass
class LowRank(EditOp):
    """Add a low-rank delta: W ← W + scale·B·A (LoRA). A: [r, in], B: [out, r]."""

    kind: ClassVar[str] = "low_rank"
    recompute: ClassVar[bool] = True
    A: torch.Tensor = None  # type: ignore[assignment]
    B: torch.Tensor = None  # type: ignore[assignment]
    scale: float = 1.0

    def hook(self, module):
        def post(mod, args, out):
            x = args[0]
            a, b = self.A.to(x.device, x.dtype), self.B.to(x.device, x.dtype)
            return out + self.scale * (x @ a.t()) @ b.t()

        return [module.register_forward_hook(post)]

    def merge(self, w, b):
        a = self.A.to(device=w.device, dtype=torch.float32)  # factors live on the CPU; w may not
        bb = self.B.to(device=w.device, dtype=torch.float32)
        return w + self.scale * (bb @ a), b

    def tensors(self):
        return {"A": self.A.contiguous(), "B": self.B.contiguous()}

    def params(self):
        return {"scale": float(self.scale)}


@register_op
@dataclass
class ProjectOut(EditOp):
    """Remove direction r from a residual writer's output: W ← W − s·r·rᵀ·W (and the bias alike)."""

    kind: ClassVar[str] = "project_out"
    recompute: ClassVar[bool] = True
    direction: torch.Tensor = None  # type: ignore[assignment]
    strength: float = 1.0

    def _r(self, dtype, device) -> torch.Tensor:
        r = self.direction.to(torch.float32)
        return (r / r.norm()).to(device=device, dtype=dtype)

    def hook(self, module):
        def post(mod, args, out):
            r = self._r(out.dtype, out.device)
            return out - self.strength * (out @ r).unsqueeze(-1) * r

        return [module.register_forward_hook(post)]

    def merge(self, w, b):
        r = self._r(torch.float32, w.device)
        w = w - self.strength * torch.outer(r, r @ w)
        if b is not None:
            b = b - self.strength * r * (r @ b)
        return w, b

    def tensors(self):
        return {"direction": self.direction.contiguous()}

    def params(self):
        return {"strength": float(self.strength)}


# ------------------------------------------------------------------------------------------------------
# the exact norm-preserving projection (method: refusal, norm_preserving: true)
# ------------------------------------------------------------------------------------------------------


def _norm_preserving(w: torch.Tensor, r: torch.Tensor, s: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(P·W, column scale D) with P = I − s·r·rᵀ and D_j = ‖w_j‖ / ‖P·w_j‖ (1 where P·w_j vanishes)."""
    pw = w - s * torch.outer(r, r @ w)
    wn, pn = w.norm(dim=0), pw.norm(dim=0)
    d = torch.where(pn > 1e-12 * wn.clamp_min(1e-30), wn / pn.clamp_min(1e-30), torch.ones_like(wn))
    return pw, d


@register_op
class NormPreservingProjectOut(ProjectOut):
    """W ← (I − s·r·rᵀ)·W·D: remove r from every column, then give each column back its norm.

    Column j of an [out, in] residual writer is the vector that input feature j (a head dimension, an MLP
    neuron, a token embedding) adds to the residual stream; this keeps every such vector's length while
    removing its r-component (at s = 1, rᵀW' = 0 exactly). The bias is only projected (b ← P·b). Hook form:
    scale the inputs by D, then project the output — the same map as the merge.
    """

    kind = "project_out_norm"

    def _scales(self, module: nn.Module) -> torch.Tensor:
        w = weight_out_in(module)
        _, d = _norm_preserving(w, self._r(torch.float32, w.device), self.strength)
        return d

    def hook(self, module):
        d32 = self._scales(module)

        def project(out):
            r = self._r(out.dtype, out.device)
            return out - self.strength * (out @ r).unsqueeze(-1) * r

        if isinstance(module, nn.Embedding):

            def post_emb(mod, args, out):
                return project(out) * d32.to(out.device, out.dtype)[args[0]].unsqueeze(-1)

            return [module.register_forward_hook(post_emb)]

        n_in, _ = in_out_features(module)

        def pre(mod, args):
            x = args[0]
            return (x * d32.to(x.device, x.dtype),) + tuple(args[1:])

        def post(mod, args, out):
            return project(out)

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def merge(self, w, b):
        r = self._r(torch.float32, w.device)
        pw, d = _norm_preserving(w, r, self.strength)
        if b is not None:
            b = b - self.strength * r * (r @ b)
        return pw * d.unsqueeze(0), b


# ------------------------------------------------------------------------------------------------------
# the refusal kernels' writer op: row norms, and updates kept off harmless inputs (method: refusal)
# ------------------------------------------------------------------------------------------------------


@register_op
@dataclass
class WriterProjectOut(EditOp):
    """W ← W − s·r·vᵀ with v = Wᵀr (plain projection) or a stored ``update`` v (the projection's row kept off
    the harmless inputs' principal subspace: v = (I − U·Uᵀ)·Wᵀr, AlphaEdit's null-space constraint), then
    ``norm``: 'column' rescales every column to its old norm (W'·D), 'row' every row (D·W', heretic's
    approximation; the bias is scaled with its row). The bias is projected: b ← b − s·r·(rᵀb).

    Hook form: the same map computed on the activations — inputs scaled by D (column), output minus
    s·r·(rᵀ(out − b) or x·v), bias term, then outputs scaled by D (row).
    """

    kind: ClassVar[str] = "project_out_writer"
    recompute: ClassVar[bool] = True
    direction: torch.Tensor = None  # type: ignore[assignment]
    strength: float = 1.0
    update: torch.Tensor | None = None
    norm: str = "none"

    def __post_init__(self):
        if self.norm not in ("none", "column", "row"):
            raise ValueError(f"norm must be 'none', 'column' or 'row', got {self.norm!r}")

    def _r(self, dtype, device) -> torch.Tensor:
        r = self.direction.to(torch.float32)
        return (r / r.norm()).to(device=device, dtype=dtype)

    def _projected(self, w: torch.Tensor) -> torch.Tensor:
        r = self._r(torch.float32, w.device)
        v = (r @ w) if self.update is None else self.update.to(device=w.device, dtype=torch.float32)
        return w - self.strength * torch.outer(r, v)

    def _scales(self, w: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
        dim = 0 if self.norm == "column" else 1
        wn, pn = w.norm(dim=dim), pw.norm(dim=dim)
        return torch.where(pn > 1e-12 * wn.clamp_min(1e-30), wn / pn.clamp_min(1e-30), torch.ones_like(wn))

    def merge(self, w, b):
        r = self._r(torch.float32, w.device)
        pw = self._projected(w)
        if b is not None:
            b = b - self.strength * r * (r @ b)
        if self.norm == "column":
            pw = pw * self._scales(w, pw).unsqueeze(0)
        elif self.norm == "row":
            d = self._scales(w, pw)
            pw = pw * d.unsqueeze(1)
            b = b * d if b is not None else None
        return pw, b

    def hook(self, module):
        if isinstance(module, nn.Embedding) and (self.update is not None or self.norm == "column"):
            raise ValueError(
                "project_out_writer: embeddings take only norm 'none' or 'row' without an update"
            )
        w = weight_out_in(module)
        d = self._scales(w, self._projected(w)) if self.norm != "none" else None
        bias = getattr(module, "bias", None)
        b32 = bias.detach().to(torch.float32) if isinstance(bias, torch.Tensor) else None
        handles = []
        if self.norm == "column":

            def pre(mod, args):
                x = args[0]
                return (x * d.to(x.device, x.dtype),) + tuple(args[1:])

            handles.append(module.register_forward_pre_hook(pre))

        def post(mod, args, out):
            r = self._r(out.dtype, out.device)
            if self.update is None:
                coef = out @ r  # rᵀ(Wx + b): the projection and the bias term in one
            else:
                coef = args[0] @ self.update.to(out.device, out.dtype)
                if b32 is not None:
                    coef = coef + (b32.to(out.device, out.dtype) @ r)
            out = out - self.strength * coef.unsqueeze(-1) * r
            return out * d.to(out.device, out.dtype) if self.norm == "row" else out

        handles.append(module.register_forward_hook(post))
        return handles

    def tensors(self):
        t = {"direction": self.direction.contiguous()}
        if self.update is not None:
            t["update"] = self.update.contiguous()
        return t

    def params(self):
        return {"strength": float(self.strength), "norm": self.norm}


def op_kinds() -> list[str]:
    """Every registered op kind (the contract test loops over them)."""
    return sorted(OPS)
