"""`dampen`: the worked example of docs/adding_a_method.md — scale every MLP neuron of some layers.

A whole method in one package: typed params, a ``check`` against the model's anatomy, a ``fit`` that
returns a :class:`FitResult`, a random control, and a report (typed info model + card section + plot).
Register it with one line — in editkit itself a ``BUILTIN_METHODS`` entry in ``editkit/methods/registry.py``
(split into ``params.py``/``fit.py``/``report.py``); here, as a plug-in outside editkit, ``@register_method``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from editkit.edit.edit import Edit
from editkit.edit.ops import ScaleInputs
from editkit.errors import EditkitError
from editkit.methods.base import FitContext, FitResult, Method, MethodParams
from editkit.methods.registry import register_method
from editkit.methods.report import Info, Report, num
from editkit.publish.plots import bar_per_layer


class DampenParams(MethodParams):
    name: str = "dampen"
    layers: list[int] = Field(default_factory=lambda: [0], description="layers whose MLP neurons are scaled")
    factor: float = Field(0.5, ge=0, description="what every neuron's output is multiplied by (0 = erase)")

    @field_validator("layers")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("must list at least one layer")
        return v


class DampenInfo(Info):
    layers: list[int] = []
    factor: float = 1.0


class DampenReport(Report):
    info_model = DampenInfo
    plot_alt = {"dampened_layers": "dampened layers"}
    info: DampenInfo

    def shown(self) -> set[str]:
        return {"layers", "factor"}

    def where(self) -> list[str]:
        layers = ", ".join(str(li) for li in self.info.layers)
        return [f"Every MLP neuron of layer(s) {layers} was scaled by {num(self.info.factor)}.", ""]

    def plots(self, out: Path, run_dir: Path) -> dict[str, str]:
        n = max(self.info.layers) + 1
        values = [1.0 - self.info.factor if li in self.info.layers else 0.0 for li in range(n)]
        bar_per_layer(values, out / "dampened.png", "share of each neuron's output removed", "1 - factor")
        return {"dampened_layers": "dampened.png"}


def dampen_edit(anatomy, layers: list[int], factor: float, info: dict | None = None) -> Edit:
    ops = [
        ScaleInputs(
            module=anatomy.layer(li).down, index=list(range(anatomy.intermediate_size)), factor=factor
        )
        for li in layers
    ]
    return Edit(method="dampen", ops=ops, info=info or {})


@register_method
class DampenMethod(Method):
    name = "dampen"
    params_cls = DampenParams
    paper = "none (a worked example)"
    summary = "every MLP neuron of the chosen layers scaled by one factor"
    report = DampenReport

    def check(self, params: DampenParams, anatomy) -> None:
        bad = [li for li in params.layers if not 0 <= li < anatomy.n_layers]
        if bad:
            raise EditkitError(f"method.layers: layer {bad[0]} is out of range 0..{anatomy.n_layers - 1}")

    def fit(self, ctx: FitContext) -> FitResult:
        p: DampenParams = ctx.params  # type: ignore[assignment]
        self.check(p, ctx.anatomy)
        info = {"layers": list(p.layers), "factor": p.factor}
        return FitResult(dampen_edit(ctx.anatomy, p.layers, p.factor, info))

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """As many other layers, chosen at random, scaled by the same factor."""
        p: DampenParams = ctx.params  # type: ignore[assignment]
        pool = [li for li in range(ctx.anatomy.n_layers) if li not in p.layers]
        pick = sorted(ctx.rng("dampen-control").sample(pool, min(len(p.layers), len(pool))))
        return dampen_edit(ctx.anatomy, pick, p.factor, {"control": "random layers, same factor"})
