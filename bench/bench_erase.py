"""Does an `erase` edit remove the capability from the representation? Variants of a recipe, one model load.

Per variant: the fit's wall time; the separation AUC of every answer-frame family (``bench_answer_frames``'
measure: the AUC of the oriented margin by class, 0.5 = no separation, a tilt leaves it unchanged) and its
accuracy; a linear probe on the residual stream (logistic regression at the last prompt token of every layer,
trained on all frames but one and tested on the one left out — the best layer's mean held-out AUC; binary
targets only); and the general suite (held-out capabilities, perplexity, drift). The base model's numbers are
cached in ``--base-cache`` so variants can be run in several invocations.

    flock /tmp/editkit-heavy.lock timeout 1500 .venv/bin/python bench/bench_erase.py recipes/erase_moral.yaml \\
        --variant r2 method.rank=2 --variant r4 method.rank=4 --json bench/results/erase_moral_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from editkit.eval.parts import Baseline
from editkit.eval.parts.drift import drift_prompts, first_token_logprobs

sys.path.insert(0, str(Path(__file__).resolve().parent))


def measure(model, tok, anatomy, cdata, data, general: bool, probe: bool, baseline, phase: str) -> dict:
    """The separation and probe checks (editkit.eval.checks, as the card runs them) and the general suite."""
    from editkit.data.general import perplexity
    from editkit.eval.checks import CHECKS
    from editkit.eval.suite import evaluate

    out: dict = {}
    sep = CHECKS["separation"]
    out["separation"] = sep.run("x", model, cdata, sep.spec_cls()).to_dict()
    if probe:
        pr = CHECKS["probe"]
        out["probe"] = pr.run("x", model, cdata, pr.spec_cls()).to_dict()
    if general:
        out["general"] = evaluate(
            model, tok, data.eval, phase=phase, baseline=baseline, batch_size=16, perplexity_fn=perplexity
        )
    return out


def judged(base: dict, r: dict) -> dict:
    from editkit.eval.checks import CHECKS

    j = {
        "separation": CHECKS["separation"].judge(
            {"base": base["separation"], "edited": r["separation"]}, None
        )
    }
    if "probe" in r and "probe" in base:
        j["probe"] = CHECKS["probe"].judge({"base": base["probe"], "edited": r["probe"]}, None)
    return j


def summary(name: str, r: dict, base: dict | None) -> str:
    frames = r["separation"]["frames"]
    cells = [
        f"{f.replace('answer_', '')} {v['auc']:.3f}" for f, v in frames.items() if v.get("auc") is not None
    ]
    s = f"{name}: AUC " + ", ".join(cells)
    if "probe" in r and r["probe"].get("best_auc") is not None:
        s += f" | probe {r['probe']['best_auc']:.3f} (layer {r['probe']['best_layer']})"
    g = r.get("general")
    if g:
        s += f" | ppl {g.get('perplexity', float('nan')):.3f} gen {g.get('general_capability_score', float('nan')):.3f}"
        if base and base.get("general"):
            b = base["general"]
            drops = {k.split("/")[1]: g[k] - b[k] for k in g if k.startswith("heldout/")}
            worst = min(drops, key=drops.get)
            s += f" (ppl {100 * (g['perplexity'] / b['perplexity'] - 1):+.1f} %, worst other {worst} {drops[worst] * 100:+.1f} pt)"
    if "judge" in r:
        s += " | " + ", ".join(f"{k}: {v.get('pass')}" for k, v in r["judge"].items())
    if "fit_s" in r:
        s += f" | fit {r['fit_s']:.0f} s"
    return s


def main() -> None:
    from editkit.data.recipe_data import load_data
    from editkit.eval.checks import CheckData
    from editkit.methods import get_method
    from editkit.model.anatomy import find_anatomy
    from editkit.model.load import load_model
    from editkit.run.context import fit_context
    from editkit.spec.recipe import load_recipe

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="override for every variant")
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar=("NAME", "KEY=VALUE"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--base-cache", type=Path)
    ap.add_argument("--no-general", action="store_true", help="skip the held-out capabilities and perplexity")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(args.recipe, args.sets)
    method_cls = get_method(recipe.method.name)
    data = load_data(recipe, method_cls.needs)
    t0 = time.time()
    loaded = load_model(recipe.model)
    model, tok = loaded.model, loaded.tokenizer
    anatomy = find_anatomy(model)
    print(f"model loaded in {time.time() - t0:.0f} s", flush=True)
    cdata = CheckData(tok, list(data.eval.target_test), list(data.roles["target_train"]), seed=recipe.seed)
    general, probe = not args.no_general, not args.no_probe
    results: dict = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    # drift compares with the base model's first-token distribution, measured here even when the base
    # numbers come from --base-cache (a cached base once left every edit's drift_kl at 0: KL to itself)
    baseline = Baseline(first_token_logprobs(model, tok, drift_prompts(data.eval), batch_size=16))
    base = None
    if args.base_cache and args.base_cache.exists():
        base = json.loads(args.base_cache.read_text())
        if (general and "general" not in base) or (probe and "probe" not in base):
            base = None
    if base is None:
        t = time.time()
        base = measure(model, tok, anatomy, cdata, data, general, probe, Baseline(), "base")
        base["measure_s"] = time.time() - t
        if args.base_cache:
            args.base_cache.write_text(json.dumps(base, indent=1))
    results["base"] = base
    print(summary("base", base, None), flush=True)
    for name, *overrides in args.variant or [["default"]]:
        r = load_recipe(args.recipe, [*args.sets, *overrides])
        ctx = fit_context(r, loaded, anatomy, data, Path("/tmp"))
        t = time.time()
        fit = method_cls().fit(ctx)
        fit_s = time.time() - t
        with fit.edit.applied(model):
            res = measure(model, tok, anatomy, cdata, data, general, probe, baseline, "edited")
        res.update(
            judge=judged(base, res),
            fit_s=fit_s,
            overrides=overrides,
            info={k: v for k, v in fit.info.items() if k != "directions"},
        )
        results[name] = res
        print(summary(name, res, base), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
