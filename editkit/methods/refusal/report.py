"""The card's part of a `refusal` run: the layer search, SRA's atoms, the comparison and the layer plot."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from editkit.eval.refusal.metrics import REFUSAL_HEADLINE, REFUSAL_METRICS
from editkit.methods.refusal.params import OBJECTIVE_LABELS
from editkit.methods.report import Info, Report, cell, escape_cell, finite, num
from editkit.publish.plots import integer_ticks, save

REMOVED_AT = 0.10
"""Held-out refusal rate at or below which a refusal run may say *removed* (by every reader measured)."""
MOVED = 0.05
"""... and the drop below which it says *not removed* (else *weakened*)."""


def sample_generations(metrics: Mapping) -> list[str]:
    """Greedy generations of the refusal sets before/after (``metrics["samples"]``: phase -> the run's
    samples-<phase>.json)."""
    got = metrics.get("samples") or {}
    base, edited = got.get("base") or {}, got.get("edited") or {}
    lines: list[str] = []

    def text(rows: list, i: int, limit: int) -> str:
        t = " ".join(str(rows[i]).split()) if i < len(rows) else "–"
        t = t if len(t) <= limit else t[: limit - 1] + "…"
        return escape_cell(t.replace("<", "&lt;")) or "(empty)"

    for kind in ("harmful", "harmless"):
        prompts = edited.get(f"{kind}_prompts") or base.get(f"{kind}_prompts") or []
        if not prompts or not (base.get(kind) or edited.get(kind)):
            continue
        if not lines:
            lines = [
                "## Sample generations",
                "",
                "Greedy, chat template, the first test prompts of each set.",
                "",
            ]
        lines += [f"### {kind.capitalize()} prompts", "", "| prompt | base model | edited model |"]
        lines.append("| --- | --- | --- |")
        for i in range(len(prompts)):
            lines.append(
                f"| {text(prompts, i, 90)} | {text(base.get(kind) or [], i, 160)} | "
                f"{text(edited.get(kind) or [], i, 160)} |"
            )
        lines.append("")
    return lines


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
    search: str | None = None
    trials: list[dict[str, Any]] | None = None
    pareto: list[int] | None = None
    chosen_trial: int | None = None
    refusal_target: float | None = None
    #: where each trial's refusal objective is (``search_objective``: log-odds, or the generated rate)
    objective_key: str = "refusal_log_odds"
    confirmed: list[dict[str, Any]] | None = None
    grid_optimum: dict[str, Any] | None = None
    direction_index: float | None = None
    kernel: dict[str, Any] | None = None
    attn_weights: list[float] | None = None
    mlp_weights: list[float] | None = None
    scores: dict[str, float] | None = None


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
    plot_alt = {
        "refusal_layers": "refusal: candidate layers",
        "refusal_trials": "refusal search: every trial, validation refusal objective vs KL",
    }
    info: RefusalInfo

    def shown(self) -> set[str]:
        keys = {"layer_scores", "atoms", "atom_cosines_before", "atom_cosines_after", "edited_layers"}
        return keys | {
            "window_scores",
            "edit_from",
            "strength_scores",
            "comparison",
            "layer_search_direction",
            "search",
            "trials",
            "pareto",
            "chosen_trial",
            "refusal_target",
            "objective_key",
            "confirmed",
            "grid_optimum",
            "direction_index",
            "kernel",
            "attn_weights",
            "mlp_weights",
            "scores",
            "grid_params",
            "eligible",
        }

    def removal_verdict(self, base, edited):
        readers = {"markers": "refusal_rate", "judge": "refusal_rate_judge"}
        got = {
            r: (base[k], edited[k])
            for r, k in readers.items()
            if finite(base.get(k)) and finite(edited.get(k))
        }
        if not got:
            return None
        reader, (b, e) = max(got.items(), key=lambda kv: kv[1][1])  # the reader that still sees most refusal
        status = "removed" if e <= REMOVED_AT else "weakened" if round(b - e, 9) >= MOVED else "not_removed"
        sentence = f"held-out refusal {b:.1%} → {e:.1%} ({reader}); *removed* needs ≤ {REMOVED_AT:.0%} by every reader"
        return {"removed": status == "removed", "status": status, "sentence": sentence}

    def run_files(self, run_dir: Path) -> dict[str, Any]:
        """The sample generations each evaluation phase kept (``samples-<phase>.json``)."""
        got = {}
        for phase in ("base", "edited"):
            f = Path(run_dir) / f"samples-{phase}.json"
            if f.exists():
                try:
                    got[phase] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    pass
        return {"samples": got} if got else {}

    def sections(self, metrics: Mapping[str, Any]) -> list[str]:
        return sample_generations(metrics)

    def _confirmation(self) -> str:
        c = self.info.confirmed
        if not c:
            return ""
        rows = "; ".join(
            f"trial {t['number']}{' (grid)' if t.get('grid') else ''}: {num(t['refusal_rate'])} at KL {num(t['kl'])}"
            for t in c
        )
        return (
            " Then confirmed by generation (greedy, keyword markers, validation harmful prompts): the lowest KL "
            f"among trials refusing no more often than the grid optimum — {rows}."
        )

    def where(self) -> list[str]:
        return self._choice() + self._search() + self._layer_table() + self._atoms() + [""]

    def _search(self) -> list[str]:
        i = self.info
        if i.search != "optuna" or not i.trials:
            return []
        pruned = sum(t.get("state") == "pruned" for t in i.trials)
        g = i.grid_optimum or {}
        k = i.kernel or {}
        lines = [
            "",
            f"**Search** (`search: optuna`): {len(i.trials)} trials of a seeded multi-objective TPE over the "
            f"direction index and attention/MLP tent profiles ({pruned} pruned: their validation KL was already "
            f"above the best eligible trial's), the first being the grid optimum (layer {g.get('layer')}, "
            f"strength {num(g.get('strength'))}). Rule: the lowest validation KL among trials whose "
            f"{self._objective()} is at most {num(i.refusal_target)}"
            + (" (the grid optimum's)." if i.chosen_trial is not None else ".")
            + self._confirmation()
            + f" Picked: trial **{i.chosen_trial}**; Pareto front: trials {cell(i.pareto)}.",
            "",
            "| kernel | peak | position (layer) | floor | half-width (layers) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for w in ("attn", "mlp"):
            t = k.get(w) or {}
            lines.append(
                f"| {'attention o_proj' if w == 'attn' else 'MLP down_proj'} | {num(t.get('peak'))} | "
                f"{num(t.get('position'))} | {num(t.get('floor'))} | {num(t.get('width'))} |"
            )
        idx = "each layer's own" if i.direction_index is None else num(i.direction_index)
        lines += ["", f"Direction index: {idx}.", ""]
        lines += self._in_sample_vs_held_out()
        return lines

    def _objective(self) -> str:
        """The search's refusal objective, in words."""
        return OBJECTIVE_LABELS[self.info.objective_key]

    def _in_sample_vs_held_out(self) -> list[str]:
        """Validation (what the search chose on) beside the held-out test numbers of the pick and the grid."""
        m = getattr(self, "run_metrics", None) or {}
        edited = m.get("edited") or {}
        grid_m = ((m.get("comparisons") or {}).get("grid optimum") or {}).get("metrics") or {}
        sc, key = self.info.scores or {}, self.info.objective_key
        g = next((t for t in self.info.trials or [] if t.get("grid")), None) or self.info.grid_optimum or {}
        lines = [
            f"| edit | validation {self._objective()} (chosen on) | validation KL (chosen on) | held-out refusal "
            "(markers) | held-out KL |",
            "| --- | --- | --- | --- | --- |",
            f"| picked trial {self.info.chosen_trial} | {num(sc.get(key))} | {num(sc.get('kl'))} | "
            f"{num(edited.get('refusal_rate'))} | {num(edited.get('harmless_kl'))} |",
            f"| grid optimum (the first trial) | {num(g.get(key))} | {num(g.get('kl'))} | "
            f"{num(grid_m.get('refusal_rate'))} | {num(grid_m.get('harmless_kl'))} |",
            "",
        ]
        return lines

    def _choice(self) -> list[str]:
        i, lines = self.info, []
        if i.search == "optuna" and i.chosen_trial not in (None, 0):  # the export is the search's kernel
            lines.append(
                f"The grid step chose layer **{i.layer}** at strength {num(i.strength)} (the search's first trial);"
                f" the exported edit is the search's pick, trial **{i.chosen_trial}**: its direction and per-layer"
                " weights are below."
            )
        elif i.layer is not None:
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
        done = self._trials_plot(out)
        scores = self.info.layer_scores
        if not scores:
            return done
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
        return {"refusal_layers": "refusal_layers.png", **done}

    def _trials_plot(self, out: Path) -> dict[str, str]:
        """Every trial: validation KL (x) vs the refusal objective (y: log-odds, or the generated rate); pruned
        trials as ticks at their KL, the Pareto front joined, the grid optimum and the pick marked."""
        trials, key = self.info.trials or [], self.info.objective_key
        if self.info.search != "optuna" or not trials:
            return {}
        fig = Figure(figsize=(6, 3.6))
        ax = fig.add_subplot()
        done = [t for t in trials if t.get(key) is not None]
        ax.scatter(
            [t["kl"] for t in done],
            [t[key] for t in done],
            s=14,
            color="#7f8c8d",
            label="trial",
        )
        pruned = [t["kl"] for t in trials if t.get(key) is None and t.get("kl") is not None]
        if pruned:
            y0 = min(t[key] for t in done) if done else 0.0
            ax.scatter(
                pruned, [y0] * len(pruned), marker="|", s=40, color="#bdc3c7", label="pruned (KL only)"
            )
        front = sorted((t for t in done if t["number"] in set(self.info.pareto or [])), key=lambda t: t["kl"])
        if front:
            ax.plot(
                [t["kl"] for t in front],
                [t[key] for t in front],
                color="#2e86c1",
                lw=1,
                label="Pareto front",
            )
        by_n = {t["number"]: t for t in done}
        grid = [t for t in done if t.get("grid")]
        if grid:
            ax.scatter(
                [grid[0]["kl"]],
                [grid[0][key]],
                marker="s",
                s=60,
                facecolors="none",
                edgecolors="black",
                label="grid optimum (plain/SRA, today)",
            )
        c = by_n.get(self.info.chosen_trial)
        if c is not None:
            ax.scatter([c["kl"]], [c[key]], marker="*", s=140, color="#b03a2e", label="picked")
        if self.info.refusal_target is not None:
            ax.axhline(self.info.refusal_target, color="#b03a2e", ls=":", lw=1)
        ax.set_xlabel("validation first-token KL (harmless)")
        ax.set_ylabel(f"validation {self._objective()} (harmful)")
        ax.legend(fontsize=7, loc="best")
        ax.set_title("refusal search: every trial", fontsize=9)
        fig.tight_layout()
        save(fig, out / "refusal_trials.png")
        return {"refusal_trials": "refusal_trials.png"}

    def comparison_note(self, comparison: Mapping[str, Any]) -> str:
        c = comparison
        return (
            f"Fitted in the same run at the same layer and KL limit (strength {num(c.get('strength'))}, validation "
            f"refusal log-odds {num(c.get('refusal_log_odds'))}, KL {num(c.get('kl'))}), and evaluated on the "
            "same prompts; it was not exported."
        )
