"""`neurons`: erase (or scale) MLP neurons by their down_proj input column (exact and mergeable).

With an explicit ``neurons`` list the method just applies it (the foundation path). Discovery by
Commonality Neuron Localisation (CNL, arXiv 2502.20992) fills the list when it is not given.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from editkit.edit import Edit, ScaleInputs
from editkit.errors import EditkitError
from editkit.methods import register_method
from editkit.methods.base import FitContext, Method, MethodParams


class NeuronsParams(MethodParams):
    name: str = "neurons"
    neurons: list[tuple[int, int]] | None = Field(
        None, description="explicit [layer, neuron] pairs to erase (skips discovery)"
    )
    scale: float = Field(0.0, description="factor for the chosen neurons (0 = erase, >1 = enhance)")

    @field_validator("neurons")
    @classmethod
    def _non_empty(cls, v):
        if v is not None and len(v) == 0:
            raise ValueError("must list at least one [layer, neuron] pair")
        return v


def neuron_edit(
    anatomy, neurons: list[tuple[int, int]], scale: float = 0.0, info: dict | None = None
) -> Edit:
    by_layer: dict[int, list[int]] = {}
    for layer, j in neurons:
        by_layer.setdefault(layer, []).append(int(j))
    ops = [
        ScaleInputs(module=anatomy.layer(li).down, index=sorted(js), factor=scale)
        for li, js in sorted(by_layer.items())
    ]
    return Edit(method="neurons", ops=ops, info={"neurons": [list(n) for n in neurons], **(info or {})})


@register_method
class NeuronsMethod(Method):
    name = "neurons"
    params_cls = NeuronsParams
    paper = "Commonality Neuron Localisation (CNL, arXiv 2502.20992)"
    summary = "capability neurons common to several datasets, erased at the down_proj input"

    def fit(self, ctx: FitContext) -> Edit:
        p: NeuronsParams = ctx.params  # type: ignore[assignment]
        if p.neurons is None:
            raise EditkitError("method.neurons: neuron discovery is not available yet; give an explicit list")
        for layer, j in p.neurons:
            if not (0 <= layer < ctx.anatomy.n_layers and 0 <= j < ctx.anatomy.intermediate_size):
                raise EditkitError(
                    f"method.neurons: [{layer}, {j}] is out of range for this model "
                    f"({ctx.anatomy.n_layers} layers x {ctx.anatomy.intermediate_size} neurons)"
                )
        return neuron_edit(ctx.anatomy, [tuple(n) for n in p.neurons], p.scale)

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        chosen = {tuple(n) for n in edit.info.get("neurons", [])}
        rng = ctx.rng("neurons-control")
        pick: set[tuple[int, int]] = set()
        while len(pick) < len(chosen):
            cand = (rng.randrange(ctx.anatomy.n_layers), rng.randrange(ctx.anatomy.intermediate_size))
            if cand not in chosen:
                pick.add(cand)
        p: NeuronsParams = ctx.params  # type: ignore[assignment]
        return neuron_edit(ctx.anatomy, sorted(pick), p.scale, info={"control": "random neurons"})
