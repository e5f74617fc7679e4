"""Score refusal-removed models like for like: the same held-out prompts, the same scorer, against one base.

For the base model and each ``--model LABEL=PATH`` (an editkit export, heretic's saved model, any folder
``AutoModelForCausalLM`` loads): greedy chat responses to the harmful and harmless test prompts (editkit's
packaged ``test`` split, ``--n`` each), read by editkit's keyword markers and by the model judge (the base
model reading each response, ``editkit.eval.refusal.judge``); first-token KL(base ‖ model) on the harmless
test prompts (all of them, and those the base answered) and on the validation prompts both tools chose on;
perplexity on editkit's built-in general test text. Every model is loaded in the same dtype.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_refusal_h2h.py \\
        --model editkit=bench/out/h2h/editkit/model --model heretic=bench/out/h2h/heretic-model \\
        --out bench/results/refusal_h2h_qwen.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _prompts(kind: str, split: str, n: int) -> list[str]:
    root = Path(__file__).resolve().parents[1] / "editkit" / "data" / "refusal"
    rows = [json.loads(x) for x in (root / f"{kind}.jsonl").read_text().splitlines() if x.strip()]
    return [r["prompt"] for r in rows if r["split"] == split][:n]


def score(model, tok, judge, sets: dict, base: dict | None, general: list[str], max_new: int) -> dict:
    import torch

    from editkit.data.general import perplexity
    from editkit.eval.refusal.chat import chat_first_token_logprobs, is_refusal, kl_rows, refusal_rate

    out: dict = {}
    t0 = time.time()
    for role in ("harmful", "harmless"):
        prompts = sets[f"{role}_test"]
        _, responses = refusal_rate(model, tok, prompts, max_new, batch_size=64)
        markers = [is_refusal(r) for r in responses]
        verdicts = judge.refusals(prompts, responses)
        out[role] = {
            "n": len(prompts),
            "markers": sum(markers),
            "judge": sum(verdicts),
            "responses": responses,
            "marker_verdicts": markers,
            "judge_verdicts": verdicts,
        }
    lp = {k: chat_first_token_logprobs(model, tok, sets[k]) for k in ("harmless_test", "harmless_val")}
    out["first_token_logprobs"] = lp
    if base is not None:
        kl = kl_rows(base["first_token_logprobs"]["harmless_test"], lp["harmless_test"])
        answered = torch.tensor([not m for m in base["harmless"]["marker_verdicts"]])
        out["kl_test"] = float(kl.mean())
        out["kl_test_answered"] = float(kl[answered].mean())
        out["kl_val"] = float(
            kl_rows(base["first_token_logprobs"]["harmless_val"], lp["harmless_val"]).mean()
        )
    out["perplexity"] = perplexity(model, tok, general)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def main() -> None:
    import torch

    from editkit.data.general import load_general_text
    from editkit.eval.refusal.judge import ModelJudge
    from editkit.model.load import load_model
    from editkit.spec.inputs import ModelSpec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="qwen-coder-1.5b")
    ap.add_argument("--model", action="append", default=[], help="LABEL=PATH (repeatable)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--n-val", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.manual_seed(0)
    sets = {
        "harmful_test": _prompts("harmful", "test", a.n),
        "harmless_test": _prompts("harmless", "test", a.n),
        "harmless_val": _prompts("harmless", "val", a.n_val),
    }
    general = list(load_general_text("builtin", split="test")["text"])
    base = load_model(ModelSpec(id=a.base, dtype=a.dtype), progress=lambda _m: None)
    judge = ModelJudge(base.model, base.tokenizer, "self")  # the base model reads every response
    results = {"base": score(base.model, base.tokenizer, judge, sets, None, general, a.max_new_tokens)}
    print("base", {k: v for k, v in results["base"].items() if k in ("perplexity", "seconds")}, flush=True)
    for spec in a.model:
        label, path = spec.split("=", 1)
        m = load_model(ModelSpec(id=str(Path(path).resolve()), dtype=a.dtype), progress=lambda _m: None)
        results[label] = score(m.model, m.tokenizer, judge, sets, results["base"], general, a.max_new_tokens)
        print(label, {k: results[label][k] for k in ("kl_test", "perplexity", "seconds")}, flush=True)
        del m
    table = {}
    for label, r in results.items():
        table[label] = {
            "refusal_markers": r["harmful"]["markers"] / r["harmful"]["n"],
            "refusal_judge": r["harmful"]["judge"] / r["harmful"]["n"],
            "over_refusal_markers": r["harmless"]["markers"] / r["harmless"]["n"],
            "over_refusal_judge": r["harmless"]["judge"] / r["harmless"]["n"],
            "kl_test": r.get("kl_test"),
            "kl_test_answered": r.get("kl_test_answered"),
            "kl_val": r.get("kl_val"),
            "perplexity": r["perplexity"],
            "perplexity_change": r["perplexity"] / results["base"]["perplexity"] - 1,
            "seconds": r["seconds"],
        }
    for r in results.values():
        r.pop("first_token_logprobs")
    doc = {
        "base": a.base,
        "dtype": a.dtype,
        "max_new_tokens": a.max_new_tokens,
        "prompts": {k: len(v) for k, v in sets.items()},
        "models": dict(a.model and [s.split("=", 1) for s in a.model]),
        "table": table,
        "responses": results,
    }
    Path(a.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
