"""Refusal benchmark: plant a refusal in the demo model, remove it with SRA / plain abliteration /
the norm-preserving variant, and run heretic-llm 1.4.0 on the same model and prompts.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_refusal.py            # everything
    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_refusal.py --skip-heretic

Writes bench/out/refusal/results.json and prints the markdown table that goes into BENCHMARKS.md
(## Refusal). Rates: greedy chat completions (100 new tokens) of the first 50 harmful_test /
harmless_test prompts; KL: first assistant token on the same harmless prompts, vs the planted model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PLANTED = Path.home() / ".cache" / "editkit" / "models" / "smollm2-planted-refusal"
SHARED = ROOT.parent / "shared" / "data" / "refusal"
#: the recipes read the built-in prompt sets; the demo-model numbers in BENCHMARKS.md were measured on the
#: larger shared splits (andyrdt/refusal_direction), so the benchmark passes those
SHARED_SETS = {
    "harmful": "harmful_train",
    "harmless": "harmless_train",
    "harmful_val": "harmful_val",
    "harmless_val": "harmless_val",
    "harmful_test": "harmful_test",
    "harmless_test": "harmless_test",
}


def shared_overrides(recipe: str) -> list[str]:
    from editkit.spec.recipe import load_recipe

    sets = load_recipe(ROOT / recipe).data.sets
    return [f"data.sets.{k}.source={SHARED / (v + '.json')}" for k, v in SHARED_SETS.items() if k in sets]


VARIANTS = {
    "sra": ("recipes/remove_refusal.yaml", ["eval.control=false"]),
    # SRA's own layer search (sra: true), plain abliteration fitted beside it at that layer
    "sra-true": ("recipes/remove_refusal.yaml", ["method.sra=true", "eval.control=false"]),
    "sra-control": ("recipes/remove_refusal.yaml", []),
    "plain": ("recipes/remove_refusal_plain.yaml", ["eval.control=false"]),
    # plain abliteration forced to SRA's layer: the same-layer comparison of KL at similar refusal
    "plain-l23": ("recipes/remove_refusal_plain.yaml", ["method.layer=23", "eval.control=false"]),
    # the same on the distilled plant (session 4), where SRA's search picks layer 17
    "plain-l17": ("recipes/remove_refusal_plain.yaml", ["method.layer=17", "eval.control=false"]),
    # the layer search with all 39 harmful_val and 64 harmless_val prompts (the recipe uses 16 + 16)
    "sra-val64": (
        "recipes/remove_refusal.yaml",
        [
            "method.n_val=64",
            "data.sets.harmful_val.limit=64",
            "data.sets.harmless_val.limit=64",
            "eval.control=false",
        ],
    ),
    # SRA's layer-23 direction removed only from the writers of the later layers (early edits cost KL?)
    "sra-l23-from12": (
        "recipes/remove_refusal.yaml",
        ["method.layer=23", f"method.edit_layers={list(range(12, 30))}", "eval.control=false"],
    ),
    "sra-l23-from20": (
        "recipes/remove_refusal.yaml",
        ["method.layer=23", f"method.edit_layers={list(range(20, 30))}", "eval.control=false"],
    ),
    # the direction layer and the first edited layer searched together (edit_from: auto), at the recipe's
    # KL limit and at heretic's KL level
    "sra-auto": ("recipes/remove_refusal.yaml", ["method.edit_from=auto", "eval.control=false"]),
    "sra-auto-kl035": (
        "recipes/remove_refusal.yaml",
        ["method.edit_from=auto", "method.kl_limit=0.35", "eval.control=false"],
    ),
    # the same search scored on all 39 harmful_val and 64 harmless_val prompts (16 under-estimate the KL)
    "sra-auto-val64": (
        "recipes/remove_refusal.yaml",
        [
            "method.edit_from=auto",
            "method.n_val=64",
            "data.sets.harmful_val.limit=64",
            "data.sets.harmless_val.limit=64",
            "eval.control=false",
        ],
    ),
    # partial removal (session 4, exploration: chosen after seeing the full-strength test numbers)
    # SRA without the 'language' atom (session 5: on validation, cleaning against it alone raised the KL)
    "sra-nolang": (
        "recipes/remove_refusal.yaml",
        ["method.atoms=[math, code, formal, list]", "eval.control=false"],
    ),
    "sra-s075": ("recipes/remove_refusal.yaml", ["method.strength=0.75", "eval.control=false"]),
    "sra-norm": ("recipes/remove_refusal.yaml", ["method.norm_preserving=true", "eval.control=false"]),
}
KEYS = ("refusal_rate", "over_refusal_rate", "harmless_kl", "harmless_kl_answered", "perplexity", "drift_kl")


def _pick(m: dict | None) -> dict:
    return {k: (round(m[k], 4) if isinstance(m.get(k), float) else m.get(k)) for k in KEYS} if m else {}


def _comparison(m: dict) -> dict | None:
    """The edit fitted beside the kept one (plain abliteration beside SRA, or SRA when plain was kept)."""
    for name, c in (m.get("comparisons") or {}).items():
        return {
            "name": name,
            "strength": c["info"]["comparison"].get("strength"),
            "edited": _pick(c["metrics"]),
        }
    return None


def run_recipe(path: str, overrides: list[str], out: Path) -> dict:
    from editkit.run.pipeline import apply_recipe

    t0 = time.time()
    overrides = [*shared_overrides(path), *overrides]
    res = apply_recipe(ROOT / path, overrides=overrides, out=out, overwrite=True, say=lambda m: None)
    m = res.metrics
    info = m.get("edit", {}).get("info", {})
    return {
        "recipe": path,
        "overrides": overrides,
        "wall_seconds": round(time.time() - t0, 1),
        "fit_seconds": m.get("fit_seconds"),
        "base": _pick(m.get("base")),
        "edited": _pick(m.get("edited")),
        "control": _pick(m.get("control")),
        "layer": info.get("layer"),
        "edit_from": info.get("edit_from"),
        "strength": info.get("strength"),
        "direction": "sra" if info.get("sra") else "plain",
        "comparison": _comparison(m),
        "atom_cosines_before": info.get("atom_cosines_before"),
        "atom_cosines_after": info.get("atom_cosines_after"),
        "sft": {k: info.get(k) for k in ("pairs", "steps", "first_loss", "final_loss")}
        if "pairs" in info
        else None,
        "export_max_abs_logit_diff": m.get("export", {}).get("max_abs_logit_diff"),
    }


def table(results: dict) -> str:
    rows = [
        "| run | refusal (harmful) | over-refusal (harmless) | first-token KL | perplexity | wall (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def f(x, pct=False):
        if x is None:
            return "–"
        return f"{100 * x:.0f}%" if pct else f"{x:.4g}"

    if "plant" in results:
        r = results["plant"]
        rows.append(
            f"| demo model (before planting) | {f(r['base'].get('refusal_rate'), True)} | "
            f"{f(r['base'].get('over_refusal_rate'), True)} | 0 | {f(r['base'].get('perplexity'))} | – |"
        )
        rows.append(
            f"| planted (`plant_refusal.yaml`, sft) | {f(r['edited'].get('refusal_rate'), True)} | "
            f"{f(r['edited'].get('over_refusal_rate'), True)} | {f(r['edited'].get('harmless_kl'))} | "
            f"{f(r['edited'].get('perplexity'))} | {r['wall_seconds']} |"
        )
    for name in VARIANTS:
        if name not in results:
            continue
        r = results[name]
        if name == "sra" or "planted_row" not in results:
            results["planted_row"] = True
            b = r["base"]
            rows.append(
                f"| planted, as loaded for removal | {f(b.get('refusal_rate'), True)} | "
                f"{f(b.get('over_refusal_rate'), True)} | 0 | {f(b.get('perplexity'))} | – |"
            )
        e = r["edited"]
        how = f"layer {r['layer']}" + (
            f", {r['direction']}, strength {r['strength']}" if r.get("direction") else ""
        )
        rows.append(
            f"| editkit `refusal` {name} ({how}) | {f(e.get('refusal_rate'), True)} | "
            f"{f(e.get('over_refusal_rate'), True)} | {f(e.get('harmless_kl'))} | {f(e.get('perplexity'))} | "
            f"{r['wall_seconds']} |"
        )
        if r.get("comparison"):
            c = r["comparison"]
            ce = c["edited"]
            rows.append(
                f"| ↳ {c['name']} fitted beside it (same layer and KL limit, strength {c['strength']}) | "
                f"{f(ce.get('refusal_rate'), True)} | {f(ce.get('over_refusal_rate'), True)} | "
                f"{f(ce.get('harmless_kl'))} | {f(ce.get('perplexity'))} | – |"
            )
        if r.get("control"):
            c = r["control"]
            rows.append(
                f"| control: random direction, same ops | {f(c.get('refusal_rate'), True)} | "
                f"{f(c.get('over_refusal_rate'), True)} | {f(c.get('harmless_kl'))} | "
                f"{f(c.get('perplexity'))} | – |"
            )
    results.pop("planted_row", None)
    h = results.get("heretic")
    if h and h.get("best"):
        b = h["best"]
        rows.append(
            f"| heretic-llm 1.4.0, {len(h['trials'])} trials, best (trial {b['trial']}) | "
            f"{f(b['refusal_rate'], True)} | – | {f(b['kl'])} | – | {h['wall_seconds']} |"
        )
    elif h:
        rows.append(f"| heretic-llm 1.4.0 | failed (rc {h.get('returncode')}, see heretic.log) | | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "refusal"))
    ap.add_argument("--plant", action="store_true", help="re-plant even if the planted model exists")
    ap.add_argument("--variants", default="sra,plain,sra-norm", help="comma list of " + ", ".join(VARIANTS))
    ap.add_argument(
        "--planted",
        default=str(PLANTED),
        help="planted model the removals (and heretic) start from (default: where plant_refusal.yaml exports)",
    )
    ap.add_argument("--skip-heretic", action="store_true")
    ap.add_argument("--heretic", default=str(Path.home() / ".cache/editkit/heretic/venv/bin/heretic"))
    ap.add_argument("--heretic-trials", type=int, default=8)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def save():
        results_path.write_text(json.dumps(results, indent=1))

    planted = Path(a.planted).expanduser()
    if a.plant or not (planted / "config.json").exists():  # plant into the folder the removals load
        export = [] if planted == PLANTED else [f"export.dir={planted}"]
        results["plant"] = run_recipe("recipes/plant_refusal.yaml", export, out / "plant")
        save()
    for name in [v for v in a.variants.split(",") if v]:
        recipe, overrides = VARIANTS[name]
        if planted != PLANTED:
            overrides = [*overrides, f"model={planted}"]
        results[name] = run_recipe(recipe, overrides, out / name)
        save()
        print(f"{name}: {results[name]['edited']}", flush=True)
    if not a.skip_heretic:
        sys.path.insert(0, str(ROOT / "bench" / "heretic"))
        from run_heretic import run as run_heretic

        results["heretic"] = run_heretic(
            str(planted), a.heretic, out / "heretic", a.heretic_trials, 128, 50, 3600
        )
        save()
    md = table(dict(results))
    (out / "table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
