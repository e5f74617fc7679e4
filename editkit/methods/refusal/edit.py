"""The refusal edit: the direction projected out of every residual writer of the edited layers."""

from __future__ import annotations

import torch

from editkit.edit import Edit
from editkit.errors import EditkitError
from editkit.methods.refusal.params import RefusalParams
from editkit.ops import EditOp, NormPreservingProjectOut, ProjectOut


def edited_layers(anatomy, p: RefusalParams, start: int | None = None) -> list[int]:
    """The layers whose writers are edited: ``edit_layers`` (default all) from ``start`` (or edit_from) on."""
    layers = range(anatomy.n_layers) if p.edit_layers is None else p.edit_layers
    if start is None and isinstance(p.edit_from, int):
        start = p.edit_from
    return [li for li in layers if start is None or li >= start]


def project_edit(
    anatomy,
    r: torch.Tensor,
    p: RefusalParams,
    info: dict | None = None,
    start: int | None = None,
    strength: float | None = None,
) -> Edit:
    """ProjectOut (or the norm-preserving op) of unit ``r`` on every residual writer, per-layer strength.

    Writers of the layers :func:`edited_layers` gives (``start``: the first edited layer, overriding
    ``edit_from``); embeddings only when ``p.embeddings``. ``strength`` overrides ``p.strength`` (needed
    when that is 'auto'); ``strength_by_layer`` still wins for the layers it names.
    """
    if strength is None:
        if p.strength == "auto":
            raise ValueError("project_edit: strength 'auto' must be resolved to a number first")
        strength = float(p.strength)
    op_cls = NormPreservingProjectOut if p.norm_preserving else ProjectOut
    r32 = (r / r.norm()).to(torch.float32).contiguous()
    layers = edited_layers(anatomy, p, start)
    ops: list[EditOp] = []
    if p.embeddings:
        if anatomy.tied_embeddings:
            raise EditkitError(
                "method.embeddings: this model ties its input embeddings to the output head; editing them "
                "would change the head too — set embeddings: false"
            )
        ops.append(op_cls(module=anatomy.embed, direction=r32.clone(), strength=strength))
    for li in layers:
        s = p.strength_by_layer.get(li, strength)
        if s == 0:
            continue
        for name in anatomy.layer(li).residual_writers:
            ops.append(op_cls(module=name, direction=r32.clone(), strength=s))  # own storage: safetensors
    return Edit(method="refusal", ops=ops, info=info or {})
