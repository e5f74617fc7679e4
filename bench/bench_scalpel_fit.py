"""Fit throughput of editkit's LoRA loop (``train_lora``: events, validation hooks, checkpoints) against a
bare PEFT + AdamW loop with the same SCALPEL loss on the same pre-built batches, in one process.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_scalpel_fit.py --steps 12
    .venv/bin/python bench/bench_scalpel_fit.py --tiny --steps 50        # seconds, no demo model

Prints tokens/s of each loop and the ratio editkit / bare (goal >= 0.9). The two loops alternate in
rounds so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from editkit.methods.lora import resolve_targets, unwrap_lora, wrap_lora
from editkit.methods.lora_config import TrainConfig
from editkit.methods.lora_fit import train_lora
from editkit.methods.scalpel.fit import ScalpelBatches, ScalpelLoss, _tokens_in
from editkit.methods.scalpel.params import ScalpelParams
from editkit.model.anatomy import find_anatomy
from editkit.run.events import EventLog

BUILTIN = Path(__file__).resolve().parents[1] / "editkit" / "data" / "builtin"


def load(tiny: bool):
    if tiny:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.tiny import tiny_model

        return tiny_model("llama")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.model.demo import demo_model_dir

    path = demo_model_dir()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _sync(model) -> None:
    """Wait for the device: a loop without host syncs returns before its last kernels have run."""
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def rows(name: str, split: str) -> list[dict]:
    return [r for r in map(json.loads, (BUILTIN / f"{name}.jsonl").open()) if r.get("split") == split]


def run_editkit(model, names, p, batches, run_dir: Path) -> tuple[float, int]:
    peft_model, flags = wrap_lora(model, names, p, seed=0)
    events = EventLog(run_dir / "events.jsonl", "bench")
    cfg = TrainConfig(
        steps=len(batches),
        lr=p.lr,
        max_grad_norm=p.max_grad_norm,
        checkpoint_every=p.checkpoint_every,
        checkpoint_dir=run_dir / "checkpoints",
    )
    _sync(model)
    t0 = time.perf_counter()
    res = train_lora(
        peft_model,
        ScalpelLoss(peft_model, names, p),
        lambda step, micro: batches[step],
        cfg,
        events=events,
        count_tokens=_tokens_in,
    )
    _sync(model)
    dt = time.perf_counter() - t0
    events.close()
    unwrap_lora(peft_model, flags)
    return dt, res.tokens


def run_bare(model, names, p, batches) -> tuple[float, int]:
    peft_model, flags = wrap_lora(model, names, p, seed=0)
    loss_fn = ScalpelLoss(peft_model, names, p)
    params = [q for q in peft_model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
    tokens = 0
    _sync(model)
    t0 = time.perf_counter()
    for b in batches:
        opt.zero_grad(set_to_none=True)
        loss_fn(b).loss.backward()
        if p.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, p.max_grad_norm)
        opt.step()
        tokens += _tokens_in(b)
    _sync(model)
    dt = time.perf_counter() - t0
    unwrap_lora(peft_model, flags)
    return dt, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="tiny random llama instead of the demo model")
    ap.add_argument("--steps", type=int, default=12, help="steps per round and loop")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--capability", default="moral")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load(args.tiny)
    p = ScalpelParams(checkpoint_every=max(1, args.steps // 2))
    names = resolve_targets(find_anatomy(model), list(p.targets), p.layers)
    texts = [r["text"] for r in rows("general_text", "train")]
    make = ScalpelBatches(tok, rows(args.capability, "train"), texts, p, seed=0)
    batches = [make(i, 0) for i in range(args.steps)]
    # warm-up (allocator, lazy inits) outside the timings
    run_bare(model, names, p, batches[:1])
    tot = {"editkit": [0.0, 0], "bare": [0.0, 0]}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as d:
            dt, n = run_editkit(model, names, p, batches, Path(d))
        tot["editkit"][0] += dt
        tot["editkit"][1] += n
        dt, n = run_bare(model, names, p, batches)
        tot["bare"][0] += dt
        tot["bare"][1] += n
        print(
            f"round {r + 1}: editkit {tot['editkit'][1] / tot['editkit'][0]:.0f} tok/s, bare {tot['bare'][1] / tot['bare'][0]:.0f} tok/s"
        )
    ek = tot["editkit"][1] / tot["editkit"][0]
    bare = tot["bare"][1] / tot["bare"][0]
    print(
        json.dumps(
            {
                "model": "tiny-llama" if args.tiny else "demo (SmolLM2-135M)",
                "steps_per_round": args.steps,
                "rounds": args.rounds,
                "threads": args.threads,
                "tokens_per_step": tot["bare"][1] / (args.steps * args.rounds),
                "editkit_tok_s": round(ek, 1),
                "bare_tok_s": round(bare, 1),
                "ratio": round(ek / bare, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
