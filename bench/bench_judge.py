"""Refusal judges: agreement with the hand-labelled set, and re-judging a run's saved responses.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_judge.py --judge qwen-coder-1.5b
    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_judge.py --judge qwen-coder-1.5b \
        --run runs/remove-refusal-qwen --skip-labelled
    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_judge.py --judge qwen-coder-1.5b \
        --labelled bench/results/judge_abliterated_qwen.jsonl --out bench/results/judge_labelled.json

Prints (and writes to --out, JSON) the judge's agreement with editkit/data/refusal/judge_labelled.jsonl
(overall and per label; the keyword markers beside it), the same on each ``--labelled`` file, and, for every ``responses-<phase>.json`` of
``--run``, the markers' and the judge's refusal rates on the harmful and harmless responses and their
agreement. ``--shared-prefix`` instead times the judge's two questions read the old way (each prompt in
full, ``label_logprobs`` twice) against the shared prompt read once (``both_label_logprobs``, what the judge
does now) on the run's responses: seconds, the largest score difference and how many verdicts differ.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_judge.py --judge qwen-coder-1.5b \
        --run runs/remove-refusal-qwen --shared-prefix --out bench/results/judge_shared_prefix.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from editkit.eval.refusal.judge import MarkerJudge, agreement, labelled_agreement, make_judge

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default="qwen-coder-1.5b", help="a model id, folder or named model")
    ap.add_argument("--run", default=None, help="a run directory with responses-<phase>.json files")
    ap.add_argument("--skip-labelled", action="store_true")
    ap.add_argument(
        "--labelled",
        nargs="*",
        default=[],
        help="more hand-labelled JSONL files (request, response, label) to measure agreement on, e.g. "
        "bench/results/judge_abliterated_qwen.jsonl",
    )
    ap.add_argument("--shared-prefix", action="store_true", help="time the shared-prompt judge (needs --run)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.time()
    judge = make_judge(a.judge)
    res: dict = {"judge": a.judge, "load_seconds": round(time.time() - t0, 1)}
    if not a.skip_labelled and not a.shared_prefix:
        t = time.time()
        res["labelled"] = {"markers": labelled_agreement(MarkerJudge()), a.judge: labelled_agreement(judge)}
        res["labelled_seconds"] = round(time.time() - t, 1)
        print(json.dumps(res["labelled"], indent=1), flush=True)
    for path in a.labelled:
        rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
        res.setdefault("more_labelled", {})[path] = {
            "markers": labelled_agreement(MarkerJudge(), rows),
            a.judge: labelled_agreement(judge, rows),
        }
        print(path, json.dumps(res["more_labelled"][path], indent=1), flush=True)
    if a.shared_prefix:
        res["shared_prefix"] = shared_prefix(judge, Path(a.run))
    elif a.run:
        res["run"] = {}
        for f in sorted(Path(a.run).glob("responses-*.json")):
            phase = f.stem.split("-", 1)[1]
            data = json.loads(f.read_text())
            row: dict = {}
            marks_all, says_all = [], []
            for kind, d in data.items():
                marks = MarkerJudge().refusals(d["prompts"], d["responses"])
                says = judge.refusals(d["prompts"], d["responses"])
                row[kind] = {
                    "n": len(marks),
                    "markers": sum(marks) / len(marks),
                    "judge": sum(says) / len(says),
                    "agreement": agreement(marks, says),
                }
                marks_all += marks
                says_all += says
            row["agreement"] = agreement(marks_all, says_all)
            res["run"][phase] = row
            print(phase, json.dumps(row), flush=True)
    res["seconds"] = round(time.time() - t0, 1)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


def shared_prefix(judge, run: Path) -> dict:
    """Old (each prompt in full) vs new (the shared part once) on every responses file of ``run``."""
    from editkit.eval.refusal.judge import (
        JUDGE_PROMPT,
        REFUSED_PROMPT,
        balanced_refusal_scores,
        both_label_logprobs,
        judge_texts,
        label_logprobs,
    )

    model, tok, bs = judge.model, judge.tokenizer, judge.batch_size
    req, resp = [], []
    for f in sorted(run.glob("responses-*.json")):
        for d in json.loads(f.read_text()).values():
            req += d["prompts"]
            resp += d["responses"]
    t = time.time()
    old = balanced_refusal_scores(
        *(
            label_logprobs(model, tok, judge_texts(tok, req, resp, p), bs)
            for p in (JUDGE_PROMPT, REFUSED_PROMPT)
        )
    )
    t_old = time.time() - t
    t = time.time()
    new = balanced_refusal_scores(*both_label_logprobs(model, tok, req, resp, bs))
    t_new = time.time() - t
    out = {
        "responses": len(resp),
        "old_seconds": round(t_old, 1),
        "new_seconds": round(t_new, 1),
        "ratio": round(t_new / t_old, 3),
        "max_abs_score_difference": float((old - new).abs().max()),
        "verdicts_differ": int(((old > 0) != (new > 0)).sum()),
        "smallest_abs_score": float(old.abs().min()),
    }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    sys.exit(main())
