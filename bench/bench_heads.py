"""Benchmark `heads` on the demo model: batched multi-mask evaluation, and compressed sensing vs exhaustive.

1. Batched masks: the same knockout masks scored one mask per forward vs several masks per forward
   (each batch row with its own mask), timed in one run; prints the speed ratio.
2. Exhaustive single-head knockout (N = layers × heads evaluations) gives the reference ranking.
3. Compressed sensing (balanced design, ≤ 25% of the exhaustive evaluations) for several seeds, k and
   solvers: overlap of its top-5 with the exhaustive top-5.
4. Confirmation on the held-out test split: target accuracy/margin with the chosen 5 heads knocked out
   vs random 5-head controls.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_heads.py --out bench/results/heads.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model dir (default: the demo model)")
    ap.add_argument("--capability", default="arithmetic")
    ap.add_argument("--items", type=int, default=32, help="train items scored per trial")
    ap.add_argument("--trials", type=int, default=66, help="CS trials (+1 baseline = evaluations)")
    ap.add_argument("--sparsity", type=float, nargs="+", default=[0.02, 0.05])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--timing-masks", type=int, default=32, help="balanced masks timed")
    ap.add_argument("--timing-stride", type=int, default=5, help="time every n-th single-head mask")
    ap.add_argument(
        "--timing-items",
        type=int,
        nargs="*",
        default=[2, 4, 8, 16],
        help="also time the balanced masks with only this many items per mask (small forwards)",
    )
    ap.add_argument(
        "--refine",
        type=int,
        nargs="*",
        default=[10, 15, 20],
        help="CS + refine R: the first trials-R trials of the design, then the fit's top R re-ranked by "
        "their single-head drop (taken from the exhaustive run: the same items, the same numbers)",
    )
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--random-controls", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write all numbers as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.data.capabilities import load_triplets
    from editkit.eval.pairwise import pairwise_margins
    from editkit.localize.designs import balanced_design, exhaustive_design, knockouts_per_trial
    from editkit.localize.head_masks import design_to_masks, encode_items, head_mask_logprobs, reduce_scores
    from editkit.localize.recovery import sparse_recovery
    from editkit.methods.heads.fit import head_label, head_mask_edit
    from editkit.model.anatomy import find_anatomy

    if args.model is None:
        from editkit.model.demo import ensure_demo_model

        args.model = str(ensure_demo_model(progress=lambda m: None))
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(args.model)
    an = find_anatomy(model)
    n_units = an.n_total_heads
    train = [dict(r) for r in load_triplets(args.capability, split="train")]
    test = [dict(r) for r in load_triplets(args.capability, split="test")]
    items = random.Random("0:heads-items").sample(train, min(args.items, len(train)))  # = the method, seed 0
    enc = encode_items(tok, items, "margin")
    n = len(items)
    res: dict = {"model": args.model, "capability": args.capability, "items": n, "n_heads_total": n_units}
    print(
        f"{args.capability}: {n} train items x 2 answers = {enc['input_ids'].shape} rows/mask; N = {n_units} heads"
    )

    def scores(lp: torch.Tensor) -> dict[str, np.ndarray]:
        return {s: reduce_scores(lp, n, s).numpy() for s in ("margin", "logprob")}

    base_lp = head_mask_logprobs(model, an, enc, torch.ones(1, an.n_layers, an.n_heads))
    base = {s: float(v[0]) for s, v in scores(base_lp).items()}
    res["baseline"] = base

    # 1. batched vs one mask per forward ----------------------------------------------------------
    # Two mask sets: the balanced random design the method uses (k heads anywhere, so the first touched
    # layer is early and little prefix is shared) and single-head masks (the exhaustive design, every
    # `--timing-stride`-th head), where grouping by layer lets the layers below run once per item.
    k_time = knockouts_per_trial(n_units, args.sparsity[0])
    mask_sets = {
        "balanced": design_to_masks(
            balanced_design(n_units, args.timing_masks, k_time, seed=99), an.n_layers, an.n_heads
        ),
        "single-head": design_to_masks(exhaustive_design(n_units), an.n_layers, an.n_heads)[
            :: args.timing_stride
        ],
    }
    head_mask_logprobs(model, an, enc, mask_sets["balanced"][:2], masks_per_forward=1)  # warm-up
    res["timing"] = {}
    for set_name, tmask in mask_sets.items():
        timing, ref, worst = {}, None, 0.0
        for per in (1, 4, 9, 16):
            t = time.perf_counter()
            lp = head_mask_logprobs(model, an, enc, tmask, masks_per_forward=per)
            timing[per] = time.perf_counter() - t
            ref = lp if ref is None else ref
            worst = max(worst, float((lp - ref).abs().max()))
            assert worst <= 1e-4, f"batched masks differ from separate forwards ({set_name}, {per})"
            print(
                f"  {set_name}: {len(tmask)} masks, {per:2d} per forward ({per * enc['input_ids'].shape[0]} rows):"
                f" {timing[per]:.2f}s"
            )
        best = min((p for p in timing if p > 1), key=timing.get)
        res["timing"][set_name] = {
            "masks": len(tmask),
            "seconds_by_masks_per_forward": timing,
            "best_masks_per_forward": best,
            "speedup": timing[1] / timing[best],
            "max_abs_diff_vs_single": worst,
        }
        print(f"{set_name}: batched speed-up {timing[1] / timing[best]:.2f}x ({best} masks per forward vs 1)")
    per = res["timing"]["single-head"]["best_masks_per_forward"]
    # the same balanced masks with fewer items per mask: one mask's forward gets small, and batching pays
    res["timing_by_items"] = {}
    for n_small in args.timing_items:
        enc_n = encode_items(tok, items[:n_small], "margin")
        rows = enc_n["input_ids"].shape[0]
        timing = {}
        for p in (1, 2, 4, 8, 16):
            if p * rows <= 1024:
                t = time.perf_counter()
                head_mask_logprobs(model, an, enc_n, mask_sets["balanced"], masks_per_forward=p)
                timing[p] = time.perf_counter() - t
        best = min((p for p in timing if p > 1), key=timing.get)
        res["timing_by_items"][n_small] = {
            "rows_per_mask": rows,
            "seconds_by_masks_per_forward": timing,
            "best_masks_per_forward": best,
            "speedup": timing[1] / timing[best],
        }
        print(
            f"balanced, {n_small} items ({rows} rows/mask): speed-up {timing[1] / timing[best]:.2f}x at {best}"
        )

    # 2. exhaustive -----------------------------------------------------------------------------------
    t = time.perf_counter()
    ex_lp = head_mask_logprobs(
        model,
        an,
        enc,
        design_to_masks(exhaustive_design(n_units), an.n_layers, an.n_heads),
        masks_per_forward=per,
    )
    ex_sec = time.perf_counter() - t
    ex = {s: v - base[s] for s, v in scores(ex_lp).items()}
    ex_top = {s: [int(j) for j in np.argsort(v, kind="stable")[: args.top_k]] for s, v in ex.items()}

    def name(j: int) -> str:
        return head_label(*divmod(j, an.n_heads))

    res["exhaustive"] = {
        "evals": n_units + 1,
        "seconds": ex_sec,
        "top": {s: [name(j) for j in v] for s, v in ex_top.items()},
        "top_drop": {s: [float(ex[s][j]) for j in v] for s, v in ex_top.items()},
        "top10": {s: [name(int(j)) for j in np.argsort(ex[s], kind="stable")[:10]] for s in ex},
    }
    for s in ex:
        print(
            f"exhaustive ({n_units + 1} evals, {ex_sec:.1f}s) {s}: "
            + ", ".join(f"{name(j)} {ex[s][j]:+.3f}" for j in ex_top[s])
        )

    # 3. compressed sensing ---------------------------------------------------------------------------
    cs_rows = []
    for sp in args.sparsity:
        k = knockouts_per_trial(n_units, sp)
        for seed in args.seeds:
            X = balanced_design(n_units, args.trials, k, seed=seed)
            t = time.perf_counter()
            lp = head_mask_logprobs(
                model, an, enc, design_to_masks(X, an.n_layers, an.n_heads), masks_per_forward=per
            )
            sec = time.perf_counter() - t
            for s, y in scores(lp).items():
                for solver in ("lasso", "lasso_cv", "omp"):
                    coef, r2, _ = sparse_recovery(X, y, solver, 0.01, n_nonzero=2 * args.top_k)
                    top = [int(j) for j in np.argsort(coef, kind="stable")[: args.top_k]]
                    row = {
                        "sparsity": sp,
                        "k": k,
                        "seed": seed,
                        "score": s,
                        "solver": solver,
                        "evals": args.trials + 1,
                        "seconds": sec,
                        "r2": r2,
                        "top": [name(j) for j in top],
                        "overlap": len(set(top) & set(ex_top[s])),
                    }
                    order = np.argsort(coef, kind="stable")
                    row["ranks_of_exhaustive_top"] = sorted(
                        int(np.where(order == j)[0][0]) for j in ex_top[s]
                    )
                    cs_rows.append(row)
                    print(
                        f"CS s={sp} k={k} seed={seed} {s:7s} {solver:8s} R2={r2:.2f} overlap {row['overlap']}/5 {row['top']}"
                    )
                    for R in args.refine if solver == "lasso" else ():
                        m = args.trials - R  # the same budget: m trials + R singles + the baseline
                        c2, _, _ = sparse_recovery(X[:m], y[:m], solver, 0.01, n_nonzero=2 * args.top_k)
                        cand = np.argsort(c2, kind="stable")[:R]
                        pick = [int(j) for j in cand[np.argsort(ex[s][cand], kind="stable")[: args.top_k]]]
                        cs_rows.append(
                            {
                                **row,
                                "solver": f"lasso+refine{R}",
                                "trials": m,
                                "top": [name(j) for j in pick],
                                "overlap": len(set(pick) & set(ex_top[s])),
                            }
                        )
                        print(
                            f"  + refine {R} ({m} trials + {R} singles): overlap {cs_rows[-1]['overlap']}/5"
                        )
    res["cs"] = cs_rows
    summary = {}
    for r in cs_rows:
        key = f"s={r['sparsity']} score={r['score']} solver={r['solver']}"
        summary.setdefault(key, []).append(r["overlap"])
    res["cs_overlap_by_config"] = summary
    print("\noverlap with exhaustive top-5 across seeds:")
    for key, v in summary.items():
        print(f"  {key:40s} {v}  mean {np.mean(v):.2f}")

    # 4. confirmation on the test split ---------------------------------------------------------------
    def target(heads: list[tuple[int, int]] | None) -> dict:
        if heads:
            with head_mask_edit(an, heads).applied(model):
                m = pairwise_margins(model, tok, test)
        else:
            m = pairwise_margins(model, tok, test)
        return {"accuracy": float((m > 0).float().mean()), "margin": float(m.mean())}

    conf = {"base": target(None)}
    conf["exhaustive_margin_top5"] = target([divmod(j, an.n_heads) for j in ex_top["margin"]])
    default = next(
        r
        for r in cs_rows
        if r["seed"] == args.seeds[0]
        and r["score"] == "margin"
        and r["solver"] == "lasso"
        and r["sparsity"] == args.sparsity[0]
    )
    conf["cs_default_top5"] = target(
        [(int(h[1:].split("H")[0]), int(h.split("H")[1])) for h in default["top"]]
    )
    conf["cs_default_heads"] = default["top"]
    rng = random.Random("bench-random-heads")
    pool = [(li, h) for li in range(an.n_layers) for h in range(an.n_heads)]
    rand = [target(rng.sample(pool, args.top_k)) for _ in range(args.random_controls)]
    conf["random5"] = {
        "accuracy_mean": float(np.mean([r["accuracy"] for r in rand])),
        "accuracy_min": float(np.min([r["accuracy"] for r in rand])),
        "margin_mean": float(np.mean([r["margin"] for r in rand])),
        "draws": rand,
    }
    res["confirm_test"] = conf
    res["test_items"] = len(test)
    print(
        f"\ntest split ({len(test)} items): " + json.dumps({k: v for k, v in conf.items() if k != "random5"})
    )
    print(
        f"random 5 heads x{args.random_controls}: acc mean {conf['random5']['accuracy_mean']:.3f} (min {conf['random5']['accuracy_min']:.3f}), margin mean {conf['random5']['margin_mean']:.3f}"
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1, default=float))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
