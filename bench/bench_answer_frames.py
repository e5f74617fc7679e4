"""Did an edit remove the judgement, or tilt the answer tokens? Per robustness family, before and after.

Pairwise accuracy on a balanced two-answer set (moral: half the items want " bad", half " good") falls to 0.5
both when the judgement is gone and when the model merely prefers one answer word for every item. The
*separation* tells them apart: orient each item's margin towards one fixed answer of its pair,
s = ℓ(first answer) − ℓ(second answer) (pair sorted), and ask whether items whose correct answer is the first
one still get a higher s than the others (ROC AUC, per answer pair, weighted by items). A tilt leaves the AUC
where it was; a removed judgement brings it to 0.5. ``tilt`` = mean of s over items: how far the model leans.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_answer_frames.py RUN_DIR [RUN_DIR ...] \\
        [--families answer_words answer_explain ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def separation(items: list[dict], margins) -> tuple[float | None, float]:
    """(separation AUC, tilt): the card's measure, ``editkit.eval.checks.separation.separation_auc``."""
    from editkit.eval.checks.separation import separation_auc

    return separation_auc(items, margins.tolist())


def main() -> None:
    import torch

    from editkit.eval.pairwise import pairwise_margins
    from editkit.eval.robustness.families import build_families
    from editkit.run.context import open_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, help="write the table here too")
    ap.add_argument("--families", nargs="*", help="only these families (default: every family)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = {}
    base_cache: dict[str, dict] = {}
    for run in args.runs:
        recipe, data, loaded, anatomy, edit, ctx = open_run(run)
        model, tok = loaded.model, loaded.tokenizer
        fams = build_families(data.eval.target_test, families=args.families, seed=recipe.seed, tokenizer=tok)
        key = json.dumps([str(loaded.path), [t["id"] for t in data.eval.target_test]])
        if key not in base_cache:
            base_cache[key] = {
                f: pairwise_margins(model, tok, items, batch_size=16) for f, items in fams.items()
            }
        with edit.applied(model):
            after = {f: pairwise_margins(model, tok, items, batch_size=16) for f, items in fams.items()}
        rows = {}
        print(f"\n{run}\n| family | n | acc before → after | AUC before → after | tilt before → after |")
        print("| --- | --- | --- | --- | --- |")
        for f, items in fams.items():
            b, a = base_cache[key][f], after[f]
            (auc_b, tilt_b), (auc_a, tilt_a) = separation(items, b), separation(items, a)
            rows[f] = {
                "n": len(items),
                "acc_before": float((b > 0).float().mean()),
                "acc_after": float((a > 0).float().mean()),
                "auc_before": auc_b,
                "auc_after": auc_a,
                "tilt_before": tilt_b,
                "tilt_after": tilt_a,
            }
            r = rows[f]
            auc = f"{auc_b:.3f} → {auc_a:.3f}" if auc_b is not None else "—"
            print(
                f"| {f} | {len(items)} | {r['acc_before']:.3f} → {r['acc_after']:.3f} | {auc} "
                f"| {tilt_b:+.2f} → {tilt_a:+.2f} |",
                flush=True,
            )
        out[str(run)] = rows
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
