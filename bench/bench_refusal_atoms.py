"""Which cleaning of the refusal direction lowers KL at equal refusal? Concept atoms (SRA) vs the
principal components of harmless activations (the atoms abliterix builds) vs both vs none (plain).

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_refusal_atoms.py \
        --recipe recipes/remove_refusal_qwen.yaml --layers 18 20 22 --out bench/results/refusal_atoms.json

One model load, one pass of activations (train prompts, concept-atom prompt sets); then at each given
direction layer, each direction is ablated from every residual writer at several strengths and scored on
the validation prompts exactly as the fit's search scores a candidate (first assistant token: refusal-token
log-odds on harmful val, KL to the base on harmless val). "KL at equal refusal" is read off each
direction's (log-odds, KL) curve (log KL interpolated linearly in log-odds between the measured strengths) at the deepest log-odds every direction reaches at that layer.
Prints a markdown table last (``--report FILE`` reprints it from an earlier result).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from editkit.methods.refusal.atoms import ridge_clean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_refusal_variants import prepared_search  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def kl_at(curve: list[tuple[float, float, float]], target: float) -> float | None:
    """KL where a (strength, log-odds, KL) curve reaches ``target`` log-odds (log-odds falls with strength),
    interpolating log KL linearly in log-odds between the two bracketing strengths; None if never reached."""
    pts = sorted(curve)
    for (_, lo_a, kl_a), (_, lo_b, kl_b) in zip(pts, pts[1:], strict=False):
        if lo_b <= target <= lo_a and lo_a != lo_b:
            t = (lo_a - target) / (lo_a - lo_b)
            return math.exp(
                math.log(max(kl_a, 1e-9)) + t * (math.log(max(kl_b, 1e-9)) - math.log(max(kl_a, 1e-9)))
            )
    return None


def common_targets(rows: dict) -> None:
    """Per layer: the deepest refusal log-odds every direction reaches (the least negative of their
    full-strength values), and each direction's KL there."""
    for res in rows["layers"].values():
        target = max(min(lo for _, lo, _ in v["curve"]) for v in res.values())
        for v in res.values():
            v["common_log_odds"] = round(target, 4)
            v["kl_at_common_log_odds"] = kl_at(v["curve"], target)


def print_table(rows: dict, strengths: list[float], alpha: float) -> None:
    print(
        f"\nbase refusal log-odds (val) {rows['base_refusal_log_odds']:.3f}; atoms: {', '.join(rows['atoms'])}; "
        f"ridge alpha {alpha}"
    )
    print(
        "| layer | direction | cos(raw) | "
        + " | ".join(f"s={x}: log-odds / KL" for x in strengths)
        + " | KL at the common log-odds |"
    )
    print("| --- " * (4 + len(strengths)) + "|")
    for layer, res in rows["layers"].items():
        for kind, v in res.items():
            k = v["kl_at_common_log_odds"]
            cells = " | ".join(f"{lo:.2f} / {kl:.4f}" for _, lo, kl in v["curve"])
            at = "not reached" if k is None else f"{k:.4f} (at {v['common_log_odds']:.2f})"
            print(f"| {layer} | {kind} | {v['cos_with_raw']} | {cells} | {at} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/remove_refusal_qwen.yaml")
    ap.add_argument("--layers", type=int, nargs="+", help="direction layers to compare at (required to run)")
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.4, 0.6, 0.8, 1.0])
    ap.add_argument("--pca", type=int, default=8, help="principal components (abliterix uses 8)")
    ap.add_argument("--out", default="bench/results/refusal_atoms.json")
    ap.add_argument("--report", default=None, help="only print the table of an earlier --out file")
    a = ap.parse_args(argv)
    if a.report:
        rows = json.loads(Path(a.report).read_text())
        common_targets(rows)
        print_table(
            rows,
            [x for x, _, _ in next(iter(rows["layers"].values()))["plain"]["curve"]],
            rows.get("ridge_alpha", 0.01),
        )
        return 0

    if not a.layers:
        ap.error("--layers is required (unless --report)")
    t0 = time.perf_counter()
    s, _loaded, _ctx = prepared_search(ROOT / a.recipe, [f"method.pca_atoms={a.pca}", "method.sra=true"])
    t_prep = time.perf_counter() - t0
    names = s.atom_names
    concept = [i for i, n in enumerate(names) if not n.startswith("pc")]
    pcs = [i for i, n in enumerate(names) if n.startswith("pc")]
    alpha = s.p.ridge_alpha

    def direction(kind: str, layer: int):
        raw, atoms = s.raw[layer], s.atom_dirs[layer]
        keep = {"plain": [], "concept": concept, "pca": pcs, "both": concept + pcs}[kind]
        return ridge_clean(raw, atoms[keep], alpha) if keep else raw / raw.norm()

    rows: dict = {"base_refusal_log_odds": s.base_score, "atoms": names, "ridge_alpha": alpha, "layers": {}}
    for layer in a.layers:
        res = {}
        for kind in ("plain", "concept", "pca", "both"):
            r = direction(kind, layer)
            curve = []
            for st in a.strengths:
                sc = s.score((layer, None, st), r)
                curve.append((st, sc["refusal_log_odds"], sc["kl"]))
                print(
                    f"layer {layer} {kind:8s} s={st}: log-odds {sc['refusal_log_odds']}, KL {sc['kl']}",
                    flush=True,
                )
            res[kind] = {
                "cos_with_raw": round(float(r @ (s.raw[layer] / s.raw[layer].norm())), 4),
                "curve": curve,
            }
        rows["layers"][str(layer)] = res
    rows["wall_s"] = {"prepare": round(t_prep, 1), "total": round(time.perf_counter() - t0, 1)}
    common_targets(rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    print_table(rows, a.strengths, alpha)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
