"""The card's part of a `refusal` run: the layer search, SRA's atoms, the comparison and the layer plot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from editkit.methods.report import Info, Report, cell, num
from editkit.plots import integer_ticks, save
from editkit.refusal.metrics import REFUSAL_HEADLINE, REFUSAL_METRICS


class RefusalInfo(Info):
    layer: int | None = None
    sra: bool | None = None
    strength: float | None = None
    edited_layers: list[int] | None = None
    edit_from: int | None = None
    layer_scores: dict[str, dict[str, float]] = {}
    window_scores: dict[str, dict[str, float]] | None = None
    strength_scores: dict[str, dict[str, float]] | None = None
    comparison: dict[str, Any] | None = None
    atoms: list[str] = []
    atom_cosines_before: dict[str, float] = {}
    atom_cosines_after: dict[str, float] = {}


class RefusalReport(Report):
    subject = "refusal"
    metrics = REFUSAL_METRICS
    metric_sets = {
        "refusal_rate": ("harmful prompts", ("harmful_test",)),
        "over_refusal_rate": ("harmless prompts", ("harmless_test",)),
        "refusal_rate_judge": ("harmful prompts", ("harmful_test",)),
        "over_refusal_rate_judge": ("harmless prompts", ("harmless_test",)),
        "harmless_kl": ("harmless prompts", ("harmless_test",)),
        "harmless_kl_answered": ("harmless prompts", ("harmless_test",)),
    }
    headline = REFUSAL_HEADLINE
    info_model = RefusalInfo
    plot_alt = {"refusal_layers": "refusal: candidate layers"}
    info: RefusalInfo

    def shown(self) -> set[str]:
        keys = {"layer_scores", "atoms", "atom_cosines_before", "atom_cosines_after", "edited_layers"}
        return keys | {
            "window_scores",
            "edit_from",
            "strength_scores",
            "comparison",
            "layer_search_direction",
        }

    def where(self) -> list[str]:
        return self._choice() + self._layer_table() + self._atoms() + [""]

    def _choice(self) -> list[str]:
        i, lines = self.info, []
        if i.layer is not None:
            lines.append(
                f"The refusal direction was taken at layer **{i.layer}** and projected out of the residual "
                f"writers of layers {cell(i.edited_layers)}"
                + (f" at strength {num(i.strength)}." if i.strength not in (None, 1, 1.0) else ".")
            )
        if i.comparison:
            c = i.comparison
            kept = "SRA-cleaned" if i.sra else "plain (uncleaned)"
            lines.append(
                f"The {kept} direction was kept; the {'plain' if c.get('direction') == 'plain' else 'SRA-cleaned'} "
                f"one was fitted beside it at the same layer (validation log-odds {num(c.get('refusal_log_odds'))},"
                f" KL {num(c.get('kl'))} at strength {num(c.get('strength'))}) and is evaluated below."
            )
        if i.strength_scores is not None:
            lines.append(
                "The strength was chosen on the validation prompts (`strength: auto`): the best candidates over "
                f"the KL limit were weakened by a search over the strength ({len(i.strength_scores)} more "
                "evaluations)."
            )
        if i.window_scores:
            lines.append(
                f"The first edited layer ({i.edit_from}) was chosen together with the direction layer "
                f"(`edit_from: auto`) from {len(i.window_scores)} (direction layer, first edited layer) "
                "pairs, by the same validation score; the table shows each direction layer at its best pair."
            )
        return lines

    def _layer_table(self) -> list[str]:
        scores = self.info.layer_scores
        if not scores:
            return []
        lines = [
            "",
            "Candidate layers (direction ablated at each; lower refusal log-odds = more removed):",
            "",
        ]
        with_s = any("strength" in v for v in scores.values())
        if with_s:
            lines += ["| layer | strength | refusal log-odds | harmless KL |", "| --- | --- | --- | --- |"]
        else:
            lines += ["| layer | refusal log-odds | harmless KL |", "| --- | --- | --- |"]
        for li, s in scores.items():
            mark = " **(chosen)**" if str(li) == str(self.info.layer) else ""
            cells = [f"{li}{mark}"] + ([num(s.get("strength"))] if with_s else [])
            cells += [num(s.get("refusal_log_odds")), num(s.get("kl"))]
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    def _atoms(self) -> list[str]:
        i = self.info
        if not i.atoms:
            return []
        lines = ["", "SRA concept atoms (cosine with the direction, before → after cleaning):", ""]
        lines += ["| atom | before | after |", "| --- | --- | --- |"]
        for a in i.atoms:
            lines.append(
                f"| {a} | {num(i.atom_cosines_before.get(a))} | {num(i.atom_cosines_after.get(a))} |"
            )
        return lines

    def plots(self, out: Path, run_dir: Path) -> dict[str, str]:
        scores = self.info.layer_scores
        if not scores:
            return {}
        layers = sorted(int(k) for k in scores)
        fig = Figure(figsize=(6, 3.2))
        ax = fig.add_subplot()
        ax.plot(
            layers, [scores[str(li)].get("refusal_log_odds") for li in layers], marker="o", color="#b03a2e"
        )
        ax.set_xlabel("candidate layer")
        integer_ticks(ax.xaxis)
        ax.set_ylabel("refusal log-odds")
        ax2 = ax.twinx()
        ax2.plot(layers, [scores[str(li)].get("kl") for li in layers], marker="s", color="#2e86c1")
        ax2.set_ylabel("harmless KL")
        if self.info.layer is not None:
            ax.axvline(int(self.info.layer), color="black", ls="--", lw=1)
        ax.set_title("refusal direction ablated at each candidate layer", fontsize=9)
        fig.tight_layout()
        save(fig, out / "refusal_layers.png")
        return {"refusal_layers": "refusal_layers.png"}

    def comparison_note(self, comparison: Mapping[str, Any]) -> str:
        c = comparison
        return (
            f"Fitted in the same run at the same layer and KL limit (strength {num(c.get('strength'))}, validation "
            f"refusal log-odds {num(c.get('refusal_log_odds'))}, KL {num(c.get('kl'))}), and evaluated on the "
            "same prompts; it was not exported."
        )
