"""lm-evaluation-harness next to editkit's own general-ability numbers, from one run with ``eval.lm_eval``.

The run evaluates base and edited model twice on the same items: editkit's held-out capability accuracies
(``data.heldout: auto``: the test split of every built-in capability, mean log-probability per answer token)
and lm-eval's ``editkit_capabilities`` task (the same 686 items as two-choice questions, summed log-likelihood).
This prints both, the item-weighted mean of editkit's per-capability accuracies (what lm-eval's ``acc``
averages over), and whether the two agree on the level and on the direction of the change.

    flock /tmp/editkit-heavy.lock .venv/bin/editkit apply recipes/remove_refusal_qwen.yaml \\
        --set data.heldout=auto --set 'eval.lm_eval={tasks: [editkit_capabilities]}' ...
    .venv/bin/python bench/bench_lm_eval.py --run runs/<that run> --out bench/results/lm_eval_qwen.json

Or on exported model folders directly, without a run (each loaded once with plain transformers, float32; both
harnesses on the first ``--limit`` items of ``editkit_capabilities``, editkit's pairwise scorer on the same items):

    .venv/bin/python bench/bench_lm_eval.py --models base=~/.cache/editkit/models/Qwen2.5-Coder-1.5B-Instruct \
        edited=runs/remove-refusal-qwen-search/model --limit 100 --out bench/results/lm_eval_qwen_models.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path


def models_mode(models: list[str], limit: int, out: str) -> None:
    """Both harnesses on the same items of each model folder, loaded once each."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.eval.lm_eval import capability_task_rows, run_lm_eval
    from editkit.eval.pairwise import pairwise_correctness
    from editkit.spec.eval import LmEvalSpec

    rows = capability_task_rows()[:limit]
    triplets = [
        {
            "prompt": r["prompt"],
            "correct": r["choices"][r["label"]],
            "incorrect": r["choices"][1 - r["label"]],
        }
        for r in rows
    ]
    spec = LmEvalSpec(tasks=["editkit_capabilities"], limit=limit)
    res: dict = {
        "items": len(rows),
        "capabilities": dict(Counter(r["capability"] for r in rows)),
        "models": {},
    }
    for item in models:
        name, _, path = item.partition("=")
        path = str(Path(path).expanduser())
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        t0 = time.perf_counter()
        le = run_lm_eval(model, tok, spec)["editkit_capabilities"]
        t1 = time.perf_counter()
        with torch.inference_mode():
            right = pairwise_correctness(model, tok, triplets)
        t2 = time.perf_counter()
        res["models"][name] = {
            "path": path,
            "lm_eval_acc": le["metrics"]["acc"],
            "lm_eval_stderr": le["stderr"].get("acc"),
            "lm_eval_n": le["n"],
            "editkit_acc": float(right.float().mean()),
            "editkit_right": int(right.sum()),
            "lm_eval_seconds": round(t1 - t0, 1),
            "editkit_seconds": round(t2 - t1, 1),
        }
        print(name, res["models"][name], flush=True)
        del model
    Path(out).write_text(json.dumps(res, indent=1) + "\n")
    print("| model | lm-eval editkit_capabilities acc | editkit pairwise, same items |")
    print("| --- | --- | --- |")
    for name, r in res["models"].items():
        print(
            f"| {name} | {r['lm_eval_acc']:.4f} ± {r['lm_eval_stderr'] or 0:.4f} "
            f"| {r['editkit_acc']:.4f} ({r['editkit_right']}/{len(rows)}) |"
        )


def main() -> None:
    from editkit.eval.lm_eval import capability_task_rows

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None, help="a run directory with eval.lm_eval")
    ap.add_argument("--models", nargs="*", default=None, help="NAME=FOLDER model folders, instead of --run")
    ap.add_argument("--limit", type=int, default=100, help="items of editkit_capabilities (--models)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.models:
        models_mode(args.models, args.limit, args.out)
        return
    if not args.run:
        ap.error("give --run or --models")
    run = Path(args.run)
    m = json.loads((run / "metrics.json").read_text())
    rows = capability_task_rows()
    le = m["lm_eval"]["tasks"]["editkit_capabilities"]
    n = le["n"]
    counts = Counter(r["capability"] for r in rows[:n])
    res: dict = {"run": run.name, "items": n, "phases": {}}
    for phase in ("base", "edited", "control"):
        if phase not in m or phase not in le["metrics"]["acc"]:
            continue
        ph = m[phase]
        per = {c: ph.get(f"heldout/{c}") for c in counts}
        weighted = (
            sum(per[c] * k for c, k in counts.items()) / n
            if all(v is not None for v in per.values())
            else None
        )
        res["phases"][phase] = {
            "lm_eval_acc": le["metrics"]["acc"][phase],
            "lm_eval_stderr": (le.get("stderr") or {}).get("acc", {}).get(phase),
            "editkit_item_weighted": weighted,
            "editkit_general_capability_score": ph.get("general_capability_score"),
            "editkit_heldout": per,
            "perplexity": ph.get("perplexity"),
            "refusal_rate": ph.get("refusal_rate"),
        }
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(
        "| phase | lm-eval editkit_capabilities acc | editkit, same items (item-weighted) | editkit general capability score (mean over the held-out sets) | perplexity |"
    )
    print("| --- | --- | --- | --- | --- |")
    for phase, r in res["phases"].items():
        print(
            f"| {phase} | {r['lm_eval_acc']:.4f} ± {r['lm_eval_stderr'] or 0:.4f} | {r['editkit_item_weighted']:.4f} "
            f"| {r['editkit_general_capability_score']:.4f} | {r['perplexity']:.3f} |"
        )
    print("\nper capability (editkit):")
    for phase, r in res["phases"].items():
        print(phase, {c: round(v, 4) for c, v in r["editkit_heldout"].items()})


if __name__ == "__main__":
    main()
