"""Pairwise scoring, old vs new, side by side in one process: every answer scored with its own prompt
(`score_answers` on (prompt, correct) and (prompt, incorrect)) vs each prompt read once with a KV cache
(`score_answer_pairs`), on the demo model, over every built-in capability and its robustness families.

    flock /tmp/editkit-heavy.lock python bench/bench_scoring.py [--model demo] [--max-items 60]

Reports items, seconds of each, the speed-up, the largest |Δ margin| and whether every item's verdict
(correct > incorrect) is the same.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from editkit.data.capabilities import BUILTIN_CAPABILITIES, load_triplets
from editkit.eval.pairwise import score_answer_pairs, score_answers
from editkit.eval.robustness.families import build_families
from editkit.eval.subsets import stratified_subset
from editkit.model.load import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-items", type=int, default=60, help="test items per capability (stratified subset)")
    ap.add_argument("--out", type=Path, default=Path("bench/results/scoring.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    loaded = load_model(args.model)
    model, tok = loaded.model, loaded.tokenizer
    sets = {}
    for name in BUILTIN_CAPABILITIES:
        items = stratified_subset([dict(t) for t in load_triplets(name, split="test")], args.max_items)
        sets[name] = items
        for fam, rows in build_families(items, seed=0, tokenizer=tok).items():
            if fam != "original":
                sets[f"{name}/{fam}"] = rows
    flat = [t for rows in sets.values() for t in rows]
    prompts = [t["prompt"] for t in flat]
    right, wrong = [t["correct"] for t in flat], [t["incorrect"] for t in flat]
    score_answer_pairs(model, tok, prompts[:32], right[:32], wrong[:32])  # warm-up
    t0 = time.perf_counter()
    both = score_answers(model, tok, prompts + prompts, right + wrong, batch_size=args.batch_size)
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    a, b = score_answer_pairs(model, tok, prompts, right, wrong, batch_size=args.batch_size)
    t_new = time.perf_counter() - t0
    n = len(flat)
    m_old, m_new = both[:n] - both[n:], a - b
    result = {
        "model": args.model,
        "items": n,
        "sets": len(sets),
        "batch_size": args.batch_size,
        "max_items_per_capability": args.max_items,
        "old_seconds": round(t_old, 2),
        "new_seconds": round(t_new, 2),
        "speedup": round(t_old / t_new, 2),
        "max_abs_margin_diff": float((m_old - m_new).abs().max()),
        "max_abs_score_diff": float(torch.cat([both[:n] - a, both[n:] - b]).abs().max()),
        "verdicts_equal": int(((m_old > 0) == (m_new > 0)).sum()),
        "accuracy_old": round(float((m_old > 0).float().mean()), 6),
        "accuracy_new": round(float((m_new > 0).float().mean()), 6),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
