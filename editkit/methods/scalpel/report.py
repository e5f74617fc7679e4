"""The card's part of a `scalpel` run: the layers whose adapter changed the weights most."""

from __future__ import annotations

from editkit.methods.report import Info, Report


class ScalpelInfo(Info):
    top_layers: list[int] | None = None


class ScalpelReport(Report):
    info_model = ScalpelInfo
    metrics = {
        "target_mean_abs_margin": (
            "target mean |ℓ⁺ − ℓ⁻|",
            "mean_abs_margin",
            "SCALPEL equalisation: towards 0 = removed",
        ),
    }
    info: ScalpelInfo

    def shown(self) -> set[str]:
        return (
            {"top_layers", "delta_norms", "layer_delta_norms"} if self.info.top_layers is not None else set()
        )

    def where(self) -> list[str]:
        if self.info.top_layers is None:
            return []
        return [f"Layers with the largest change: {', '.join(str(i) for i in self.info.top_layers)}.", ""]
