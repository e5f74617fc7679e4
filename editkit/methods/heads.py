"""`heads`: knock out attention heads (zero their o_proj input columns; exact and GQA-safe).

With an explicit ``heads`` list the method just applies it (the foundation path). Discovery by compressed
sensing over random head knockouts (arXiv 2603.03335) fills the list when it is not given.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from editkit.edit import Edit, ScaleInputs
from editkit.errors import EditkitError
from editkit.methods import register_method
from editkit.methods.base import FitContext, Method, MethodParams


class HeadsParams(MethodParams):
    name: str = "heads"
    heads: list[tuple[int, int]] | None = Field(
        None, description="explicit [layer, head] pairs to knock out (skips discovery)"
    )
    scale: float = Field(0.0, description="factor for the chosen heads' outputs (0 = knock out)")

    @field_validator("heads")
    @classmethod
    def _non_empty(cls, v):
        if v is not None and len(v) == 0:
            raise ValueError("must list at least one [layer, head] pair")
        return v


def head_mask_edit(
    ctx_anatomy, heads: list[tuple[int, int]], scale: float = 0.0, info: dict | None = None
) -> Edit:
    """An Edit that scales the given (layer, query-head) pairs at the o_proj input."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        ctx_anatomy.layer(layer)
        by_layer.setdefault(layer, []).extend(ctx_anatomy.head_columns(head))
    ops = [
        ScaleInputs(module=ctx_anatomy.layer(li).o, index=cols, factor=scale)
        for li, cols in sorted(by_layer.items())
    ]
    return Edit(method="heads", ops=ops, info={"heads": [list(h) for h in heads], **(info or {})})


@register_method
class HeadsMethod(Method):
    name = "heads"
    params_cls = HeadsParams
    paper = "Compressed sensing for capability localization in LLMs (arXiv 2603.03335)"
    summary = "a sparse set of attention heads, zeroed at the o_proj input"

    def fit(self, ctx: FitContext) -> Edit:
        p: HeadsParams = ctx.params  # type: ignore[assignment]
        if p.heads is None:
            raise EditkitError("method.heads: head discovery is not available yet; give an explicit list")
        for layer, head in p.heads:
            if not (0 <= layer < ctx.anatomy.n_layers and 0 <= head < ctx.anatomy.n_heads):
                raise EditkitError(
                    f"method.heads: [{layer}, {head}] is out of range for this model "
                    f"({ctx.anatomy.n_layers} layers x {ctx.anatomy.n_heads} heads)"
                )
        return head_mask_edit(ctx.anatomy, [tuple(h) for h in p.heads], p.scale)

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        chosen = {tuple(h) for h in edit.info.get("heads", [])}
        pool = [
            (li, h)
            for li in range(ctx.anatomy.n_layers)
            for h in range(ctx.anatomy.n_heads)
            if (li, h) not in chosen
        ]
        rng = ctx.rng("heads-control")
        pick = rng.sample(pool, min(len(chosen), len(pool)))
        p: HeadsParams = ctx.params  # type: ignore[assignment]
        return head_mask_edit(ctx.anatomy, pick, p.scale, info={"control": "random heads"})
