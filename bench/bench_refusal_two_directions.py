"""Does ablating a second refusal direction, found on the already edited model, buy lower KL at equal
*generated* refusal than one direction at full strength?

Iterative (two-direction) ablation: the recipe's grid edit (its layer, every layer's writers, its options —
e.g. ``harmless_mean_per_layer``) at a reduced strength ``k1 × strength``; on that edited model the
difference-of-means direction is recomputed (same training prompts, ``--layer2``, default the recipe's
layer), orthogonalised against the first direction and ablated too, at strength ``s2`` from the same
writers. Both projections go into one :class:`~editkit.edit.edit.Edit` (the first's ops, then the second's:
merged in that order in fp32). With ``harmless_mean_per_layer`` the second direction at layer ``li`` is also
made orthogonal to the edited model's harmless mean entering ``li`` (and to the first edit's direction there).

Every edit is scored as ``bench_refusal_variants.py`` scores it: first-token refusal log-odds (validation
harmful), first-token KL to the base (validation harmless), and the share of validation harmful prompts refused
in ``--tokens`` greedy tokens. The one-direction baseline at ``--base-scales`` is scored in the same process.
"KL at the baseline's refusal" (the baseline at scale 1) is read off each first strength's curve over s2
(s2 = 0 is the baseline at that scale) by linear interpolation, in refused share and in log-odds.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_refusal_two_directions.py \
        --recipe /path/to/recipe.yaml --out bench/results/refusal_two_directions_qwen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_refusal_variants import interpolate_kl, prepared_search  # noqa: E402

from editkit.edit.edit import Edit  # noqa: E402
from editkit.eval.refusal.chat import generate, is_refusal  # noqa: E402
from editkit.methods.refusal.direction import diff_of_means  # noqa: E402
from editkit.methods.refusal.edit import kernel_edit, uniform_weights  # noqa: E402
from editkit.methods.refusal.search import RefusalSearch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def orthonormal_off(r: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """Unit ``r`` with the span of ``others`` removed (Gram–Schmidt, float64), renormalised."""
    basis: list[torch.Tensor] = []
    for v in others:
        v = v.double()
        for b in basis:
            v = v - (v @ b) * b
        if v.norm() > 1e-9:
            basis.append(v / v.norm())
    out = r.double()
    for b in basis:
        out = out - (out @ b) * b
    return out / out.norm().clamp_min(1e-12)


def second_direction(s: RefusalSearch, first: Edit, layer: int, layer2: int) -> tuple:
    """On the model with ``first`` (the grid edit of ``layer``'s direction) applied: (li → the second unit
    direction, found at ``layer2``; what was measured)."""
    p, model = s.p, s.ctx.model
    t = time.perf_counter()
    with first.applied(model):
        acts_h, acts_s = s._acts(s.harm), s._acts(s.safe)
    diff = acts_h.mean(0) - acts_s.mean(0)  # [L, H]
    raw2 = diff_of_means(acts_h, acts_s, p.project_off_harmless_mean, p.winsorize)
    safe_mean2 = acts_s.mean(0)
    r1 = s.directions(s.primary)[layer]  # the first direction (before any per-layer harmless-mean step)
    d = raw2[layer2]
    r2 = orthonormal_off(d, [r1])
    first_at = s.direction_fn(s.primary, float(layer))  # li → the first edit's direction at li

    def at(li: int) -> torch.Tensor:
        if not p.harmless_mean_per_layer:
            return r2
        return orthonormal_off(r2, [first_at(li), safe_mean2[li]])

    info = {
        "layer2": layer2,
        "gap_base": round(float(s.gap[layer2]), 4),  # ‖mean(harmful) − mean(harmless)‖ at layer2
        "gap_edited": round(float(diff[layer2].norm()), 4),
        "gap_edited_orthogonal": round(float((diff[layer2] - (diff[layer2] @ r1) * r1).norm()), 4),
        "cos_recomputed_first": round(float(d @ r1), 4),
        "s": round(time.perf_counter() - t, 1),
    }
    return at, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--recipe", default="recipes/remove_refusal_qwen_search.yaml", help="absolute or repo-relative"
    )
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--base-scales", type=float, nargs="+", default=[0.6, 0.7, 0.8, 1.0])
    ap.add_argument("--first-scales", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    ap.add_argument("--second", type=float, nargs="+", default=[0.5, 1.0], help="second strengths s2")
    ap.add_argument("--layer2", type=int, default=None, help="layer of the second direction (recipe's)")
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens per validation harmful prompt")
    ap.add_argument("--out", default="bench/results/refusal_two_directions.json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    recipe_path = ROOT / a.recipe  # an absolute --recipe stays as it is
    s, loaded, ctx = prepared_search(recipe_path, a.overrides)
    p, an = s.p, ctx.anatomy
    layer, strength = int(p.layer), float(p.strength)
    layer2 = layer if a.layer2 is None else a.layer2
    model, tok = loaded.model, ctx.tokenizer
    print(f"setup {time.perf_counter() - t0:.0f}s", flush=True)

    def refused_share(e: Edit | None) -> float:
        if e is None:
            texts = generate(model, tok, s.harm_val, a.tokens, max(s.batch_size, 32))
        else:
            with e.applied(model):
                texts = generate(model, tok, s.harm_val, a.tokens, max(s.batch_size, 32))
        return round(sum(map(is_refusal, texts)) / len(texts), 4)

    def scored(e: Edit, **fields) -> dict:
        t1 = time.perf_counter()
        sc = s.evaluate_edit(e)
        row = {**fields, **sc, "refused": refused_share(e), "s": round(time.perf_counter() - t1, 1)}
        print(row, flush=True)
        return row

    def first_edit(k: float) -> Edit:
        return s.grid_edit(s.primary, layer, None, k * strength)

    rows: dict = {
        "recipe": str(a.recipe),
        "recipe_method": p.model_dump(mode="json"),
        "overrides": a.overrides,
        "layer": layer,
        "layer2": layer2,
        "strength": strength,
        "n_train": [len(s.harm), len(s.safe)],
        "n_val": [len(s.harm_val), len(s.safe_val)],
        "tokens": a.tokens,
        "base": {"refusal_log_odds": round(s.base_score, 4), "refused": refused_share(None)},
        "baseline": [],
        "two_directions": {},
    }
    print(f"base: {rows['base']}", flush=True)
    for k in a.base_scales:
        rows["baseline"].append(scored(first_edit(k), scale=k, strength=round(k * strength, 4)))
    base_at = {c["scale"]: c for c in rows["baseline"]}
    for k1 in a.first_scales:
        e1 = first_edit(k1)
        at, info = second_direction(s, e1, layer, layer2)
        print(f"first x{k1}: second direction {info}", flush=True)
        curve = []
        for s2 in a.second:
            w2 = uniform_weights(an, p, None, s2)
            e2 = kernel_edit(an, at, w2, w2, p, nulls=s.nulls, weight_of=s.weight_of, embed_strength=s2)
            both = Edit(method="refusal", ops=e1.ops + e2.ops)
            curve.append(scored(both, first_scale=k1, first_strength=round(k1 * strength, 4), s2=s2))
        rows["two_directions"][str(k1)] = {"second_direction": info, "curve": curve}

    ref = base_at.get(1.0)
    ref_share = None if ref is None else ref["refused"]
    ref_lo = None if ref is None else ref["refusal_log_odds"]

    def at_ref(curve: list[dict]) -> dict:
        return {
            "kl_at_baseline_refused": None
            if ref is None
            else interpolate_kl([(c["refused"], c["kl"]) for c in curve], ref_share),
            "kl_at_baseline_log_odds": None
            if ref is None
            else interpolate_kl([(c["refusal_log_odds"], c["kl"]) for c in curve], ref_lo),
        }

    rows["baseline_at_1"] = ref and {"refused": ref_share, "refusal_log_odds": ref_lo, "kl": ref["kl"]}
    rows["baseline_interpolated"] = at_ref(rows["baseline"])
    everything = list(rows["baseline"])
    for k1, v in rows["two_directions"].items():
        pts = ([base_at[float(k1)]] if float(k1) in base_at else []) + v["curve"]  # s2 = 0 first
        v.update(at_ref(pts))
        everything += v["curve"]
    if ref is not None:  # the cheapest edit of all that refuses no more than the baseline (no interpolation)
        ok = [c for c in everything if c["refused"] <= ref_share]
        rows["lowest_kl_at_or_below_baseline_refused"] = min(ok, key=lambda c: c["kl"]) if ok else None
    rows["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))

    def fmt(x):
        return "—" if x is None else f"{x:.4f}"

    print(f"\nbaseline x1 refuses {ref_share} (log-odds {ref_lo}) of the validation harmful prompts")
    print("| edit | refused | log-odds | KL | s |\n| --- | --- | --- | --- | --- |")
    for c in rows["baseline"]:
        print(
            f"| one direction x{c['scale']} | {c['refused']:.4f} | {c['refusal_log_odds']:.3f} | {c['kl']:.5f} | {c['s']} |"
        )
    for k1, v in rows["two_directions"].items():
        for c in v["curve"]:
            print(
                f"| x{k1} + second s2={c['s2']} | {c['refused']:.4f} | {c['refusal_log_odds']:.3f} | "
                f"{c['kl']:.5f} | {c['s']} |"
            )
    print("\n| family | KL at baseline's refused share | KL at baseline's log-odds |\n| --- | --- | --- |")
    bi = rows["baseline_interpolated"]
    print(f"| one direction | {fmt(bi['kl_at_baseline_refused'])} | {fmt(bi['kl_at_baseline_log_odds'])} |")
    for k1, v in rows["two_directions"].items():
        print(f"| first x{k1} | {fmt(v['kl_at_baseline_refused'])} | {fmt(v['kl_at_baseline_log_odds'])} |")
    print(f"wall {rows['wall_s']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
