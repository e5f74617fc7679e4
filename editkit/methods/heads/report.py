"""The card's part of a `heads` run: the heads knocked out, their coefficients and the heatmap."""

from __future__ import annotations

import shutil
from pathlib import Path

from editkit.methods.report import Info, Report, finite, num
from editkit.publish.plots import layer_head_heatmap


def head_label(layer: int, head: int) -> str:
    """``L{layer}H{head}``: how heads are named in logs and as keys of ``edit.info['refined_drops']``."""
    return f"L{layer}H{head}"


class HeadsInfo(Info):
    heads: list[tuple[int, int]] = []
    coefficients: list[list[float]] | None = None
    coefficient_meaning: str | None = None
    refined_drops: dict[str, float] = {}
    design: str | None = None
    score: str | None = None
    r2: float | None = None
    n_evals: int | None = None
    heatmap: str | None = None


class HeadsReport(Report):
    info_model = HeadsInfo
    plot_alt = {"heads_heatmap": "attention heads: layer × head"}
    info: HeadsInfo

    def shown(self) -> set[str]:
        keys = {"heads", "coefficients", "ranking", "heatmap", "coefficient_meaning", "design", "score"}
        return keys | {"r2", "n_evals", "refined_drops"}

    def where(self) -> list[str]:
        i = self.info
        lines = [
            f"{len(i.heads)} attention head(s), zeroed at the `o_proj` input (one column block per query head):",
            "",
        ]
        coef, refined = i.coefficients, i.refined_drops
        header = (
            "| layer | head |" + (" coefficient |" if coef else "") + (" drop alone |" if refined else "")
        )
        lines += [header, "| --- | --- |" + (" --- |" if coef else "") + (" --- |" if refined else "")]
        for li, h in i.heads:
            c = ""
            if coef:
                try:
                    c = f" {num(float(coef[li][h]))} |"
                except (IndexError, TypeError, ValueError):
                    c = " – |"
            if refined:
                c += f" {num(refined.get(head_label(li, h)))} |"
            lines.append(f"| {li} | {h} |{c}")
        lines.append("")
        if i.coefficient_meaning:
            lines.append(f"Coefficient: {i.coefficient_meaning}.")
        if refined:
            lines.append(
                f"The fit's top {len(refined)} candidates were then knocked out one at a time and ranked by that "
                "drop in task score (`refine`)."
            )
        if i.n_evals is not None:
            lines.append(
                f"Found with the `{i.design}` design: {i.n_evals} evaluations"
                + (f", R² {num(i.r2)}" if finite(i.r2) else "")
                + (f", task score `{i.score}`" if i.score else "")
                + "."
            )
        if not coef:
            lines.append("The heads were given explicitly in the recipe (no discovery run).")
        return lines + [""]

    def plots(self, out: Path, run_dir: Path) -> dict[str, str]:
        coef = self.info.coefficients
        if coef and all(row for row in coef):
            title = f"heads: {self.info.coefficient_meaning or 'per-head score'}"
            layer_head_heatmap(coef, out / "heads_heatmap.png", title, self.info.heads)
            return {"heads_heatmap": "heads_heatmap.png"}
        for p in (self.info.heatmap, run_dir / "heads_heatmap.png"):  # drawn by the fit (older runs)
            if p and Path(p).is_file():
                out.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, out / "heads_heatmap.png")
                return {"heads_heatmap": "heads_heatmap.png"}
        return {}
