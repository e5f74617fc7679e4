"""Does keeping each writer's update off its harmless inputs (AlphaEdit's null-space constraint) lower KL at
equal refusal? One kernel (a run's picked kernel, or today's layer-16 edit), scaled, with and without the
null-space projection at a few energy fractions; every edit scored on the validation prompts exactly as the
search scores a trial (first assistant token: refusal-token log-odds on harmful val, KL to the base on
harmless val). "KL at equal refusal" is read off each variant's (log-odds, KL) curve as in
bench_refusal_atoms.py.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_refusal_nullspace.py \
        --recipe recipes/remove_refusal_qwen_search.yaml --run runs/remove-refusal-qwen-search \
        --set model.dtype=float32 --set method.n_val=32 --out bench/results/refusal_nullspace_qwen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from editkit.data.recipe_data import load_data
from editkit.methods import get_method
from editkit.methods.refusal.nullspace import principal_subspace, writer_inputs
from editkit.methods.refusal.search import RefusalSearch
from editkit.model.anatomy import find_anatomy
from editkit.model.load import load_model
from editkit.run.context import fit_context
from editkit.spec.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_refusal_atoms import kl_at  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/remove_refusal_qwen_search.yaml")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument(
        "--run", default=None, help="take the kernel from this run's edit (default: layer 16, s 0.961)"
    )
    ap.add_argument("--scales", type=float, nargs="+", default=[0.6, 0.8, 1.0, 1.25, 1.5])
    ap.add_argument("--energies", type=float, nargs="+", default=[0.9, 0.99])
    ap.add_argument("--out", default="bench/results/refusal_nullspace.json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    recipe = load_recipe(ROOT / a.recipe, a.overrides)
    data = load_data(recipe, get_method("refusal").needs)
    loaded = load_model(recipe.model)
    an = find_anatomy(loaded.model)
    ctx = fit_context(recipe, loaded, an, data, Path("/tmp"))
    s = RefusalSearch(ctx, recipe.method)
    s.load_prompts()
    s.find_directions()
    s.prepare_scores()
    s.total, s.done = 10**9, 0
    if a.run:
        info = json.loads((Path(a.run) / "edit" / "edit.json").read_text())["info"]
        index, attn, mlp = (
            info.get("direction_index", info["layer"]),
            info["attn_weights"],
            info["mlp_weights"],
        )
    else:
        st = float(recipe.method.strength)  # the recipe's grid optimum (layer, strength), every layer
        index, attn, mlp = float(recipe.method.layer), [st] * an.n_layers, [st] * an.n_layers
    writers = [n for li in range(an.n_layers) for n in an.layer(li).residual_writers]
    t1 = time.perf_counter()
    xs = writer_inputs(
        loaded.model, ctx.tokenizer, s.safe[: recipe.method.null_space_prompts], writers, s.batch_size
    )
    bases = {e: {n: principal_subspace(x, e) for n, x in xs.items()} for e in a.energies}
    n_tokens = next(iter(xs.values())).shape[0]
    del xs
    t_null = time.perf_counter() - t1
    rows: dict = {
        "kernel": {"direction_index": index, "attn": attn, "mlp": mlp},
        "n_val": [len(s.harm_val), len(s.safe_val)],
        "null_space_tokens": n_tokens,
        "kept_dims": {
            str(e): {"min": min(u.shape[1] for u in b.values()), "max": max(u.shape[1] for u in b.values())}
            for e, b in bases.items()
        },
        "variants": {},
    }
    for name, nulls in [("plain", {})] + [(f"null_space {e}", bases[e]) for e in a.energies]:
        s.nulls = nulls
        curve = []
        for k in a.scales:
            e = s.make_edit(s.primary, index, [k * w for w in attn], [k * w for w in mlp])
            sc = s.evaluate_edit(e)
            curve.append((k, sc["refusal_log_odds"], sc["kl"]))
            print(f"{name:18s} x{k}: log-odds {sc['refusal_log_odds']}, KL {sc['kl']}", flush=True)
        rows["variants"][name] = {"curve": curve}
    target = max(min(lo for _, lo, _ in v["curve"]) for v in rows["variants"].values())
    ref = rows["variants"]["plain"]["curve"]
    at_one = next(lo for k, lo, _ in ref if k == 1.0) if 1.0 in a.scales else target
    for v in rows["variants"].values():
        v["kl_at_common_log_odds"] = kl_at(v["curve"], target)
        v["kl_at_kernel_log_odds"] = kl_at(v["curve"], at_one) if at_one >= target else None
    rows["common_log_odds"], rows["kernel_log_odds"] = target, at_one
    rows["base_refusal_log_odds"] = s.base_score
    rows["wall_s"] = {"null_space_bases": round(t_null, 1), "total": round(time.perf_counter() - t0, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    print(f"\ncommon log-odds {target:.3f}; the kernel's own (x1, plain) {at_one:.3f}")
    print(
        "| variant | "
        + " | ".join(f"x{k}: log-odds / KL" for k in a.scales)
        + " | KL at common | KL at kernel's |"
    )
    print("| --- " * (3 + len(a.scales)) + "|")
    for name, v in rows["variants"].items():
        cells = " | ".join(f"{lo:.2f} / {kl:.4f}" for _, lo, kl in v["curve"])
        f = lambda x: "not reached" if x is None else f"{x:.4f}"  # noqa: E731
        print(f"| {name} | {cells} | {f(v['kl_at_common_log_odds'])} | {f(v['kl_at_kernel_log_odds'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
