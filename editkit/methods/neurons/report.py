"""The card's part of a `neurons` run: the neurons erased per layer, CNL overlaps, the per-layer plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editkit.methods.report import Info, Report, cell, num
from editkit.publish.plots import bar_per_layer


class NeuronsInfo(Info):
    neurons: list[tuple[int, int]] = []
    neuron_units: list[list[Any]] = []  # MoE: (layer, expert or 'shared', index) of each neuron
    experts: list[dict[str, Any]] = []  # MoE: the experts holding neurons and their router pick rates
    mean_attribution: list[float] = []
    overlap: dict[str, Any] = {}
    per_layer: list[float] | None = None


class NeuronsReport(Report):
    info_model = NeuronsInfo
    plot_alt = {"neurons_per_layer": "capability neurons per layer"}
    info: NeuronsInfo

    def shown(self) -> set[str]:
        return {"neurons", "mean_attribution", "overlap", "per_layer", "neuron_units", "experts"}

    def where(self) -> list[str]:
        neurons, attr = self.info.neurons, self.info.mean_attribution
        per_layer: dict[int, int] = {}
        for li, _ in neurons:
            per_layer[li] = per_layer.get(li, 0) + 1
        units = self.info.neuron_units
        where = "each expert's `down_proj` input" if units else "the `down_proj` input"
        lines = [f"{len(neurons)} MLP neuron(s), erased at {where}. Neurons per layer:", ""]
        lines += ["| layer | neurons |", "| --- | --- |"]
        lines += [f"| {li} | {n} |" for li, n in sorted(per_layer.items())]
        lines.append("")
        lines += self._experts()
        shown = [tuple(u) for u in units[:20]] if units else neurons[:20]
        lines.append(
            "First neurons (layer, "
            + ("expert, " if units else "")
            + "index"
            + (", mean attribution" if attr else "")
            + "): "
            + ", ".join(
                "(" + ", ".join(map(str, n)) + (f", {num(attr[i])})" if i < len(attr) else ")")
                for i, n in enumerate(shown)
            )
            + (
                f" … and {len(neurons) - len(shown)} more (all in `editkit/edit.json`)."
                if len(neurons) > 20
                else "."
            )
        )
        if self.info.overlap:
            lines += ["", "Overlap between the neuron sets of the datasets (CNL overlap rate):", ""]
            lines += ["| pair | value |", "| --- | --- |"]
            lines += [f"| {k} | {cell(v)} |" for k, v in self.info.overlap.items()]
        return lines + [""]

    def _experts(self) -> list[str]:
        """MoE: which experts hold the neurons, and how often the routers pick them (base model)."""
        rows = self.info.experts
        if not rows:
            return []
        lines = [
            "Experts holding the neurons, and the share of tokens their router sends them on the target "
            "text and on general text (base model; a shared expert sees every token):",
            "",
            "| layer | expert | neurons | picked on target | picked on general |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            lines.append(
                f"| {r.get('layer')} | {r.get('expert')} | {r.get('neurons')} | {num(r.get('pick_target'))} | "
                f"{num(r.get('pick_general'))} |"
            )
        return lines + [""]

    def plots(self, out: Path, run_dir: Path) -> dict[str, str]:
        if self.info.per_layer is None or not self.info.neurons:
            return {}
        bar_per_layer(
            self.info.per_layer,
            out / "neurons_per_layer.png",
            "capability neurons per layer",
            "neurons",
            "#8a5a9e",
        )
        return {"neurons_per_layer": "neurons_per_layer.png"}
