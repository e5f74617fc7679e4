"""The refusal edit: the direction projected out of every residual writer of the edited layers.

:func:`project_edit` is today's edit (one direction, one strength on every edited layer); :func:`kernel_edit`
the general one (a weight per layer for attention and MLP writers, a direction per layer, row norms, updates
kept off the harmless inputs). With the options of today it makes exactly the ops :func:`project_edit` makes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from editkit.edit.edit import Edit
from editkit.edit.ops import EditOp, NormPreservingProjectOut, ProjectOut, WriterProjectOut
from editkit.errors import EditkitError
from editkit.methods.refusal.nullspace import null_space_update
from editkit.methods.refusal.params import RefusalParams


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


def norm_kind(p: RefusalParams) -> str:
    """'none', 'column' or 'row' from ``norm_preserving`` (true = 'column')."""
    v = p.norm_preserving
    return "column" if v is True else ("none" if v is False else str(v))


def uniform_weights(anatomy, p: RefusalParams, start: int | None, strength: float) -> list[float]:
    """Today's per-layer weights: ``strength`` (``strength_by_layer`` wins) on the edited layers, else 0."""
    layers = set(edited_layers(anatomy, p, start))
    return [p.strength_by_layer.get(li, strength) if li in layers else 0.0 for li in range(anatomy.n_layers)]


def kernel_edit(
    anatomy,
    direction: Callable[[int], torch.Tensor],
    attn: list[float],
    mlp: list[float],
    p: RefusalParams,
    info: dict | None = None,
    nulls: Mapping[str, torch.Tensor] | None = None,
    weight_of: Callable[[str], torch.Tensor] | None = None,
    embed_strength: float = 1.0,
) -> Edit:
    """Per layer ``li``: its attention out-projection at weight ``attn[li]``, its MLP writers (down, experts'
    downs) at ``mlp[li]``, each projecting out unit ``direction(li)``; weight 0 = not edited.

    Op per writer: the norm-preserving column projection (``norm_preserving: true/'column'``), a
    :class:`WriterProjectOut` for 'row' or for a writer in ``nulls`` (its harmless-input basis U: the update
    v = (I − UUᵀ)Wᵀr is computed here from ``weight_of(name)``), else the plain :class:`ProjectOut`.
    """
    norm, nulls = norm_kind(p), nulls or {}
    ops: list[EditOp] = []

    def op(name: str, r: torch.Tensor, s: float) -> EditOp:
        if name in nulls:
            assert weight_of is not None, "kernel_edit: null-space updates need the writers' weights"
            v = null_space_update(weight_of(name), r, nulls[name])
            return WriterProjectOut(module=name, direction=r.clone(), strength=s, update=v, norm=norm)
        if norm == "row":
            return WriterProjectOut(module=name, direction=r.clone(), strength=s, norm="row")
        cls = NormPreservingProjectOut if norm == "column" else ProjectOut
        return cls(module=name, direction=r.clone(), strength=s)

    if p.embeddings:
        if anatomy.tied_embeddings:
            raise EditkitError(
                "method.embeddings: this model ties its input embeddings to the output head; editing them "
                "would change the head too — set embeddings: false"
            )
        r0 = direction(0)
        ops.append(op(anatomy.embed, (r0 / r0.norm()).to(torch.float32).contiguous(), embed_strength))
    for li in range(anatomy.n_layers):
        layer = anatomy.layer(li)
        writers = [(n, attn[li] if n == layer.o else mlp[li]) for n in layer.residual_writers]
        if not any(s for _, s in writers):
            continue
        r = direction(li)
        r32 = (r / r.norm()).to(torch.float32).contiguous()
        for name, s in writers:
            if s != 0:
                ops.append(op(name, r32, float(s)))
    return Edit(method="refusal", ops=ops, info=info or {})
