"""Which way of taking the refusal direction out of the weights costs the least KL at equal *generated* refusal?

One direction (the recipe's grid optimum: its layer, every layer's writers), built five ways — plain projection,
exact column norms kept (biprojected abliteration), row norms kept (heretic's approximation), the direction
projected off each edited layer's harmless mean, and column norms with the per-layer harmless mean (the full
biprojected recipe) — each at a few strengths. Every edit is scored on the validation prompts the search uses:
first-token refusal log-odds (harmful), first-token KL to the base (harmless), and the share of the harmful
prompts refused in ``--tokens`` greedy tokens (keyword markers). "KL at the plain edit's refusal" is read off
each variant's (refused share, KL) points by linear interpolation.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_refusal_variants.py \
        --recipe recipes/remove_refusal_qwen_search.yaml --out bench/results/refusal_variants_qwen.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from editkit.data.recipe_data import load_data
from editkit.eval.refusal.chat import generate, is_refusal
from editkit.methods import get_method
from editkit.methods.refusal.search import RefusalSearch
from editkit.model.anatomy import find_anatomy
from editkit.model.load import load_model
from editkit.run.context import fit_context
from editkit.spec.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]

#: name → the method fields that make the variant (everything else as the recipe says)
VARIANTS = {
    "plain": {"norm_preserving": False, "harmless_mean_per_layer": False},
    "column norms": {"norm_preserving": "column", "harmless_mean_per_layer": False},
    "row norms": {"norm_preserving": "row", "harmless_mean_per_layer": False},
    "harmless mean per layer": {"norm_preserving": False, "harmless_mean_per_layer": True},
    "column norms + harmless mean per layer": {"norm_preserving": "column", "harmless_mean_per_layer": True},
}


def interpolate_kl(points: list[tuple[float, float]], rate: float) -> float | None:
    """KL where the (refused share, KL) polyline, ordered by share, reaches ``rate``; None when it does not."""
    pts = sorted(points)
    if not pts or rate < pts[0][0] or rate > pts[-1][0]:
        return None
    for (r0, k0), (r1, k1) in zip(pts, pts[1:], strict=False):
        if r0 <= rate <= r1:
            return k0 if r1 == r0 else k0 + (k1 - k0) * (rate - r0) / (r1 - r0)
    return pts[0][1]


def prepared_search(recipe_path: Path, overrides: list[str]):
    """(the refusal search of the recipe with its directions found and its validation scores ready, the loaded
    model, the fit context): what every scored edit of these benchmarks starts from."""
    recipe = load_recipe(recipe_path, overrides)
    data = load_data(recipe, get_method("refusal").needs)
    loaded = load_model(recipe.model)
    ctx = fit_context(recipe, loaded, find_anatomy(loaded.model), data, Path("/tmp"))
    s = RefusalSearch(ctx, recipe.method)
    s.load_prompts()
    s.find_directions()
    s.prepare_scores()
    s.total, s.done = 10**9, 0
    return s, loaded, ctx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/remove_refusal_qwen_search.yaml")
    ap.add_argument("--set", action="append", default=[], dest="overrides")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.8, 1.0, 1.2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens per validation harmful prompt")
    ap.add_argument(
        "--run",
        default=None,
        help="take the kernel (direction index, per-layer weights) from this run's edit",
    )
    ap.add_argument("--out", default="bench/results/refusal_variants.json")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    s, loaded, ctx = prepared_search(ROOT / a.recipe, a.overrides)
    p0 = s.p
    layer, strength = int(p0.layer), float(p0.strength)
    kernel = None
    if a.run:  # a searched kernel instead of the grid optimum: scaled as a whole
        info = json.loads((Path(a.run) / "edit" / "edit.json").read_text())["info"]
        kernel = (info.get("direction_index", info.get("layer")), info["attn_weights"], info["mlp_weights"])
    model, tok = loaded.model, ctx.tokenizer
    base_texts = generate(model, tok, s.harm_val, a.tokens, max(s.batch_size, 32))
    rows: dict = {
        "recipe": a.recipe,
        "overrides": a.overrides,
        "layer": layer,
        "strength": strength,
        "kernel_from": a.run,
        "n_val": [len(s.harm_val), len(s.safe_val)],
        "tokens": a.tokens,
        "base": {
            "refusal_log_odds": round(s.base_score, 4),
            "refused": sum(map(is_refusal, base_texts)) / len(base_texts),
        },
        "variants": {},
    }
    print(f"base: log-odds {s.base_score:.3f}, refused {rows['base']['refused']:.3f}", flush=True)
    for name in a.variants:
        s.p = p0.model_copy(update=VARIANTS[name])
        curve = []
        for k in a.scales:
            t1 = time.perf_counter()
            if kernel is None:
                e = s.grid_edit(s.primary, layer, None, k * strength)
            else:
                index, attn, mlp = kernel
                e = s.make_edit(s.primary, index, [k * w for w in attn], [k * w for w in mlp])
            sc = s.evaluate_edit(e)
            with e.applied(model):
                texts = generate(model, tok, s.harm_val, a.tokens, max(s.batch_size, 32))
            refused = round(sum(map(is_refusal, texts)) / len(texts), 4)
            curve.append({"scale": k, **sc, "refused": refused, "s": round(time.perf_counter() - t1, 1)})
            print(f"{name:40s} x{k}: {curve[-1]}", flush=True)
        rows["variants"][name] = {"fields": VARIANTS[name], "curve": curve}
    ref = next(
        (c["refused"] for c in rows["variants"].get("plain", {}).get("curve", []) if c["scale"] == 1.0), None
    )
    for v in rows["variants"].values():
        pts = [(c["refused"], c["kl"]) for c in v["curve"]]
        v["kl_at_plain_refusal"] = None if ref is None else interpolate_kl(pts, ref)
    rows["plain_refused_at_1"] = ref
    rows["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    print(f"\nplain x1 refuses {ref} of the validation harmful prompts in {a.tokens} tokens")
    print(
        "| variant | " + " | ".join(f"x{k}: refused / log-odds / KL" for k in a.scales) + " | KL at plain's |"
    )
    print("| --- " * (2 + len(a.scales)) + "|")
    for name, v in rows["variants"].items():
        cells = " | ".join(
            f"{c['refused']:.3f} / {c['refusal_log_odds']:.2f} / {c['kl']:.4f}" for c in v["curve"]
        )
        kl = v["kl_at_plain_refusal"]
        print(f"| {name} | {cells} | {'not reached' if kl is None else f'{kl:.4f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
