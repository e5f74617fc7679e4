"""SCALPEL rank sweep: removal vs preservation for r in {1, 2, 4, 8} on several capabilities.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_rank_sweep.py \
        --capabilities moral capitals --ranks 1 2 4 8 --out bench/results/rank_sweep.json

Starts from `recipes/remove_moral.yaml` (only `method.rank` and `data.target` change; alpha stays 16, so
the merged scale alpha/r shrinks as r grows, as PEFT does), loads the model once, evaluates the base once
per capability, then fits and evaluates each rank with the pipeline's own evaluation (held-out test items,
the other built-in capabilities, perplexity, first-token KL). BLiMP, the random control and the paraphrase
check are left to the full recipe runs (`--blimp` turns BLiMP on). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from editkit.data.general import perplexity
from editkit.eval.parts import Baseline
from editkit.eval.suite import evaluate
from editkit.model.anatomy import find_anatomy
from editkit.model.load import load_model
from editkit.run.context import fit_context
from editkit.run.pipeline import prepare
from editkit.spec.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("target_accuracy", "general_capability_score", "perplexity", "drift_kl", "blimp_accuracy")


def _evaluate(ctx, method, recipe, data, phase: str, baseline: Baseline) -> dict:
    """The pipeline's evaluation of one phase (general suite + the method's own metrics)."""
    pf = perplexity if recipe.eval.perplexity else None
    bs = recipe.eval.batch_size
    m = evaluate(
        ctx.model, ctx.tokenizer, data.eval, phase=phase, baseline=baseline, batch_size=bs, perplexity_fn=pf
    )
    m.update(method.evaluate(ctx, phase))
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "remove_moral.yaml"))
    ap.add_argument("--capabilities", nargs="+", default=["moral", "capitals"])
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--blimp", action="store_true", help="also BLiMP (adds ~1 min per evaluation)")
    ap.add_argument("--set", nargs="*", default=[], help="extra recipe overrides")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rank_sweep.json"))
    args = ap.parse_args()

    common = ["eval.control=false", "eval.robustness=false", f"eval.blimp={str(args.blimp).lower()}"]
    results: list[dict] = []
    loaded = None
    for cap in args.capabilities:
        recipe = load_recipe(args.recipe, [*common, *args.set, f"data.target={cap}"])
        method_cls, data = prepare(recipe)
        if loaded is None:
            loaded = load_model(recipe.model)
        model = loaded.model
        method = method_cls()
        with tempfile.TemporaryDirectory() as tmp:
            ctx = fit_context(recipe, loaded, find_anatomy(model), data, Path(tmp))
            t = time.time()
            baseline = Baseline()
            base = _evaluate(ctx, method, recipe, data, "base", baseline)
            print(
                f"{cap}: base {json.dumps({k: base.get(k) for k in KEYS})} ({time.time() - t:.0f}s)",
                flush=True,
            )
            for r in args.ranks:
                ctx.params = recipe.method.model_copy(update={"rank": r})
                torch.manual_seed(recipe.seed)
                t = time.time()
                edit = method.fit(ctx).edit
                fit_s = time.time() - t
                with edit.applied(model):
                    edited = _evaluate(ctx, method, recipe, data, "edited", baseline)
                row = {
                    "capability": cap,
                    "rank": r,
                    "fit_seconds": round(fit_s, 1),
                    "steps": edit.info.get("steps_run"),
                    "delta_norm": round(sum(v**2 for v in edit.delta_norms(model).values()) ** 0.5, 4),
                    "base": {k: base.get(k) for k in KEYS},
                    "edited": {k: edited.get(k) for k in KEYS},
                    "heldout_edited": {k: v for k, v in edited.items() if k.startswith("heldout/")},
                    "heldout_base": {k: v for k, v in base.items() if k.startswith("heldout/")},
                }
                results.append(row)
                print(json.dumps(row), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps(results, indent=1))

    print("\n| capability | r | target base → edited | Δ target (pt) | others Δ (pt) | ppl Δ | KL | fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        b, e = row["base"], row["edited"]
        print(
            f"| {row['capability']} | {row['rank']} | {100 * b['target_accuracy']:.1f} → "
            f"{100 * e['target_accuracy']:.1f} | {100 * (e['target_accuracy'] - b['target_accuracy']):+.1f} | "
            f"{100 * (e['general_capability_score'] - b['general_capability_score']):+.2f} | "
            f"{100 * (e['perplexity'] / b['perplexity'] - 1):+.1f}% | {e['drift_kl']:.3f} | {row['fit_seconds']} |"
        )


if __name__ == "__main__":
    main()
