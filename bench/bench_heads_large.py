"""Heads localisation on a bigger model on a CPU, in resumable slices (each call stays under a time budget).

Every score is kept in a cache file, so a run that needs an hour of CPU is a series of short calls:

    M=~/.cache/editkit/models/Qwen2.5-Coder-1.5B-Instruct
    flock /tmp/editkit-heavy.lock python bench/bench_heads_large.py base --model $M --cache bench/out/q.pt
    flock /tmp/editkit-heavy.lock python bench/bench_heads_large.py exhaustive --model $M --capability arithmetic \\
        --cache bench/out/q.pt --budget 480        # repeat until it says 'done'
    flock /tmp/editkit-heavy.lock python bench/bench_heads_large.py cs --model $M --capability arithmetic ...
    python bench/bench_heads_large.py report --capability arithmetic --cache bench/out/q.pt   # no model needed
    flock /tmp/editkit-heavy.lock python bench/bench_heads_large.py confirm --model $M --capability arithmetic ...

Stages: ``base`` (pairwise accuracy of every built-in capability on its test split), ``exhaustive`` (one
query head knocked out per evaluation, margin on ``--items`` fixed train items), ``cs`` (balanced designs of
``--evals`` − 1 trials for each seed: compressed sensing at that budget), ``report`` (top-5 overlap of CS,
plain Lasso and Lasso + refine R at the same budget, with the exhaustive top-5; share of the total single-head
drop the top 5 carry), ``confirm`` (held-out test: the exhaustive top-5 and CS top-5 vs 5 random heads — target,
the other capabilities, perplexity). Same functions as the ``heads`` method (editkit.localize).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_cache(path: Path) -> dict:
    return torch.load(path, weights_only=False) if path.exists() else {}


def save_cache(path: Path, cache: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(cache, tmp)
    tmp.replace(path)


def load_model(path: str, dtype: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def triplets(name: str, split: str, limit: int | None = None, seed: str | None = None) -> list[dict]:
    from editkit.data.capabilities import load_triplets
    from editkit.eval.subsets import stratified_subset

    rows = [dict(r) for r in load_triplets(name, split=split)]
    if seed is not None and limit is not None:
        return random.Random(seed).sample(rows, min(limit, len(rows)))
    # test subsets as editkit's eval.max_items takes them: seeded, stratified by answer class and family (the
    # first N items of a split can all share one answer)
    return stratified_subset(rows, limit, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["base", "exhaustive", "cs", "report", "confirm"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--capability", default="arithmetic")
    ap.add_argument("--items", type=int, default=16, help="fixed train items scored per evaluation")
    ap.add_argument("--evals", type=int, default=84, help="CS budget: trials + 1 baseline")
    ap.add_argument("--sparsity", type=float, default=0.05)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--refine", type=int, default=20)
    ap.add_argument("--test-items", type=int, default=60, help="test items per capability (base, confirm)")
    ap.add_argument("--budget", type=float, default=480, help="seconds of scoring per call")
    ap.add_argument("--batch-rows", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from editkit.data.capabilities import BUILTIN_CAPABILITIES
    from editkit.eval.pairwise import pairwise_margins
    from editkit.localize.designs import balanced_design, knockouts_per_trial
    from editkit.localize.head_masks import design_to_masks, encode_items, head_mask_logprobs, reduce_scores
    from editkit.methods.heads.fit import head_label, head_mask_edit
    from editkit.model.anatomy import find_anatomy

    cache_path = Path(args.cache)
    cache = load_cache(cache_path)
    cap = args.capability
    key = f"{cap}/items{args.items}"
    t_start = time.perf_counter()

    if args.stage == "report":
        report(cache, key, args)
        return
    model, tok = load_model(args.model, args.dtype)
    an = find_anatomy(model)
    n_units = an.n_total_heads
    print(
        f"model {args.model}: {an.n_layers} layers x {an.n_heads} heads = {n_units}; load {time.perf_counter() - t_start:.0f}s"
    )

    if args.stage == "base":
        base = cache.setdefault("base", {})
        for name in BUILTIN_CAPABILITIES:
            if name in base:
                continue
            t = time.perf_counter()
            m = pairwise_margins(model, tok, triplets(name, "test", args.test_items))
            base[name] = {"accuracy": float((m > 0).float().mean()), "margin": float(m.mean()), "n": len(m)}
            print(f"{name}: {base[name]} ({time.perf_counter() - t:.0f}s)", flush=True)
            save_cache(cache_path, cache)
        return

    items = triplets(cap, "train", args.items, seed="0:heads-items")
    enc = encode_items(tok, items, "margin")
    n = len(items)
    entry = cache.setdefault(key, {"n_units": n_units, "n_layers": an.n_layers, "n_heads": an.n_heads})

    def score(masks: torch.Tensor) -> np.ndarray:
        kw = {"batch_rows": args.batch_rows} if args.batch_rows else {}
        lp = head_mask_logprobs(model, an, enc, masks, **kw)
        return reduce_scores(lp, n, "margin").numpy()

    if "baseline" not in entry:
        entry["baseline"] = float(score(torch.ones(1, an.n_layers, an.n_heads))[0])
        save_cache(cache_path, cache)
        print(f"baseline margin {entry['baseline']:.4f}")

    if args.stage == "exhaustive":
        ex = entry.setdefault("exhaustive", {})  # head index -> margin with that head knocked out
        todo = [j for j in range(n_units) if j not in ex]
        # the deepest layers first would share the most prefix; take whole layers so SharedPrefix pays
        chunk = an.n_heads
        while todo and time.perf_counter() - t_start < args.budget:
            part, todo = todo[:chunk], todo[chunk:]
            X = np.eye(n_units, dtype=np.int8)[part]
            t = time.perf_counter()
            ys = score(design_to_masks(X, an.n_layers, an.n_heads))
            ex.update({j: float(y) for j, y in zip(part, ys, strict=True)})
            entry["exhaustive_seconds"] = entry.get("exhaustive_seconds", 0.0) + time.perf_counter() - t
            save_cache(cache_path, cache)
            print(
                f"exhaustive {len(ex)}/{n_units} ({time.perf_counter() - t:.0f}s for {len(part)})", flush=True
            )
        print("done" if len(ex) == n_units else f"{n_units - len(ex)} left")
        return

    if args.stage == "cs":
        k = knockouts_per_trial(n_units, args.sparsity)
        for seed in args.seeds:
            ck = f"cs/s{args.sparsity}/seed{seed}/evals{args.evals}"
            if ck in entry:
                continue
            if time.perf_counter() - t_start > args.budget:
                print("budget spent; call again")
                return
            X = balanced_design(n_units, args.evals - 1, k, seed=seed)
            t = time.perf_counter()
            entry[ck] = {"X": X, "y": score(design_to_masks(X, an.n_layers, an.n_heads)), "k": k}
            entry[ck]["seconds"] = time.perf_counter() - t
            save_cache(cache_path, cache)
            print(f"{ck}: {entry[ck]['seconds']:.0f}s", flush=True)
        print("done")
        return

    if args.stage == "confirm":
        rep = report(cache, key, args, quiet=True)
        test = {name: triplets(name, "test", args.test_items) for name in BUILTIN_CAPABILITIES}
        texts = [json.loads(x)["text"] for x in (ROOT / "editkit/data/builtin/general_text.jsonl").open()]
        texts = [
            json.loads(x)["text"]
            for x in (ROOT / "editkit/data/builtin/general_text.jsonl").open()
            if json.loads(x).get("split") == "test"
        ][:40] or texts[:40]
        from editkit.data.general import perplexity

        def evaluate(heads) -> dict:
            def run() -> dict:
                out = {}
                for name, rows in test.items():
                    m = pairwise_margins(model, tok, rows)
                    out[name] = float((m > 0).float().mean())
                    out[f"{name}_margin"] = float(m.mean())  # accuracy saturates at 1.0 on this model
                out["perplexity"] = float(perplexity(model, tok, texts))
                return out

            if not heads:
                return run()
            with head_mask_edit(an, heads).applied(model):
                return run()

        conf = entry.setdefault("confirm", {})
        pool = [(li, h) for li in range(an.n_layers) for h in range(an.n_heads)]
        sets = {"base": [], "exhaustive_top5": rep["ex_top5"], "cs_top5_seed0": rep["cs_top5_seed0"]}
        rng = random.Random("bench-random-heads")
        for i in range(3):
            sets[f"random5_{i}"] = rng.sample(pool, 5)
        for label, heads in sets.items():
            if label in conf:
                continue
            if time.perf_counter() - t_start > args.budget:
                print("budget spent; call again")
                return
            t = time.perf_counter()
            conf[label] = {"heads": [head_label(*h) for h in heads], **evaluate(heads)}
            save_cache(cache_path, cache)
            print(f"{label}: {conf[label]} ({time.perf_counter() - t:.0f}s)", flush=True)
        print("done")


def report(cache: dict, key: str, args, quiet: bool = False) -> dict:
    from editkit.localize.recovery import sparse_recovery
    from editkit.methods.heads.fit import head_label

    entry = cache[key]
    n_units, n_heads = entry["n_units"], entry["n_heads"]
    ex = entry.get("exhaustive", {})
    out: dict = {"baseline": entry["baseline"], "exhaustive_done": len(ex), "n_units": n_units}
    if len(ex) < n_units:
        print(json.dumps(out))
        return out
    drops = np.array([ex[j] - entry["baseline"] for j in range(n_units)])
    order = np.argsort(drops, kind="stable")
    top5 = [int(j) for j in order[:5]]
    neg = -drops[drops < 0]
    out["ex_top5"] = [divmod(j, n_heads) for j in top5]
    out["ex_top5_labels"] = [head_label(*divmod(j, n_heads)) for j in top5]
    out["ex_top5_drops"] = [round(float(drops[j]), 4) for j in top5]
    out["ex_6_to_10_drops"] = [round(float(drops[j]), 4) for j in order[5:10]]
    out["top5_share_of_total_drop"] = float(-drops[top5].sum() / neg.sum()) if neg.size else 0.0
    out["exhaustive_seconds"] = entry.get("exhaustive_seconds")
    cs = {}
    for ck, v in entry.items():
        if not ck.startswith("cs/"):
            continue
        X, y = v["X"], v["y"]
        coef, r2, _ = sparse_recovery(X, y, "lasso", 0.01, n_nonzero=10)
        plain = [int(j) for j in np.argsort(coef, kind="stable")[:5]]
        R = args.refine
        m = len(y) - R  # the same budget: m trials + R single-head checks (+ the baseline)
        c2, _, _ = sparse_recovery(X[:m], y[:m], "lasso", 0.01, n_nonzero=10)
        cand = np.argsort(c2, kind="stable")[:R]
        refined = [int(j) for j in cand[np.argsort(drops[cand], kind="stable")[:5]]]
        cs[ck] = {
            "k": v["k"],
            "seconds": round(v["seconds"], 1),
            "r2": round(float(r2), 3),
            "plain_top5": [head_label(*divmod(j, n_heads)) for j in plain],
            "plain_overlap": len(set(plain) & set(top5)),
            f"refine{R}_overlap": len(set(refined) & set(top5)),
        }
        if "seed0" in ck:
            out["cs_top5_seed0"] = [divmod(j, n_heads) for j in plain]
    out["cs"] = cs
    if not quiet:
        print(json.dumps(out, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
