"""One GPU check: editkit's speed figures on random-weight models of real shapes, in one call.

    python bench/gpu_check.py                 # GPU: Llama 1B and 8B and a Qwen2 1.5B shape, bf16 (< 6 min)
    python bench/gpu_check.py --tiny          # the same code paths on tiny shapes, CPU, fp32 (seconds; CI)

What it times (editkit's own code, nothing re-implemented here):

* batched head masks ÷ one mask per forward: 32 balanced knockout masks × 64 rows (32 arithmetic items,
  score ``margin``), ``head_mask_logprobs`` at the default ``batch_rows`` (``editkit.model.sizing``) vs
  ``masks_per_forward=1``, on each shape; and the largest |Δ score| between the two (bf16: batching noise);
* SCALPEL fit tokens/s ÷ a bare PEFT + AdamW loop with the same loss on the same batches (1B shape;
  ``bench/bench_scalpel_fit.py``'s two loops, warmed up on every batch first, timed editkit-bare-bare-editkit,
  with the device synchronised before each clock read);
* the refusal direction's activations (``residual_activations``, 128 + 128 prompts) at the default batch
  vs batch 16, on the deepest shape;
* one ``editkit apply`` (the ``remove_moral`` recipe, SCALPEL) end to end on the 1B shape saved to disk, in
  a child process: wall time and its stages (events.jsonl);
* correctness in fp32 on the device: batched vs one-mask-per-forward scores on a tiny model (≤ 1e-4).

Weights are random (no real checkpoint fits the 64 MiB a GPU call can carry); the tokenizer is a
byte-level BPE trained here on editkit's built-in data, so token counts are close to a real tokenizer's.
Prints one table last (and ``--json PATH`` writes the numbers). Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# name -> (transformers config class, kwargs); real shapes of the published models (random weights)
SHAPES = {
    "llama-1b": (
        "LlamaConfig",
        dict(
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            tie_word_embeddings=True,
            rope_theta=500000.0,
            max_position_embeddings=4096,
        ),
    ),
    "qwen2-1.5b": (
        "Qwen2Config",
        dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=False,
            rope_theta=1000000.0,
            max_position_embeddings=4096,
        ),
    ),
    "llama-8b": (
        "LlamaConfig",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            tie_word_embeddings=False,
            rope_theta=500000.0,
            max_position_embeddings=4096,
        ),
    ),
}
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def builtin_rows(name: str, split: str | None = None) -> list[dict]:
    path = ROOT / "editkit" / "data" / "builtin" / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    return [r for r in rows if split is None or r.get("split") == split]


def train_tokenizer(vocab: int):
    """A byte-level BPE trained on the built-in capability and general text (seconds)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    texts = []
    for f in sorted((ROOT / "editkit" / "data" / "builtin").glob("*.jsonl")):
        for r in map(json.loads, f.open(encoding="utf-8")):
            texts += [
                r.get("text") or "",
                r.get("prompt") or "",
                r.get("correct") or "",
                r.get("incorrect") or "",
            ]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [t for t in texts if t], vocab_size=vocab, special_tokens=["<|endoftext|>", "<pad>"]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
    )


def build(shape: str, tiny: bool, vocab: int, device: torch.device, dtype: torch.dtype):
    import transformers

    cls_name, kw = SHAPES[shape]
    kw = dict(kw)
    if tiny:
        kw.update(TINY)
        kw["vocab_size"] = vocab
    kw.update(bos_token_id=0, eos_token_id=0, pad_token_id=1)
    cfg = getattr(transformers, cls_name)(**kw)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def n_params(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e9


# ------------------------------------------------------------------------------------------------------
# the figures
# ------------------------------------------------------------------------------------------------------


def heads_batching(model, tok, n_masks: int, n_items: int) -> dict:
    from editkit.localize.designs import balanced_design, knockouts_per_trial
    from editkit.localize.head_masks import design_to_masks, encode_items, head_mask_logprobs
    from editkit.methods.heads.fit import batch_rows_for
    from editkit.methods.heads.params import HeadsParams
    from editkit.model.anatomy import find_anatomy

    an = find_anatomy(model)
    items = builtin_rows("arithmetic", "train")[:n_items]
    enc = encode_items(tok, items, "margin")
    n_units = an.n_total_heads
    X = balanced_design(n_units, n_masks, knockouts_per_trial(n_units, 0.02), seed=0)
    masks = design_to_masks(X, an.n_layers, an.n_heads)
    rows = batch_rows_for(model, HeadsParams(), enc)
    dev = next(model.parameters()).device

    def timed(**kw) -> tuple[float, torch.Tensor]:
        head_mask_logprobs(model, an, enc, masks[:2], **kw)  # warm-up: allocator, kernels for the shape
        sync(dev)
        t0 = time.perf_counter()
        out = head_mask_logprobs(model, an, enc, masks, **kw)
        sync(dev)
        return time.perf_counter() - t0, out

    t_batched, batched = timed(batch_rows=rows)
    t_single, single = timed(masks_per_forward=1)
    return {
        "heads": n_units,
        "rows_per_mask": int(enc["input_ids"].shape[0]),
        "tokens_per_row": int(enc["input_ids"].shape[1]),
        "batch_rows": rows,
        "masks_per_forward": max(1, rows // enc["input_ids"].shape[0]),
        "ms_per_eval_batched": 1000 * t_batched / n_masks,
        "ms_per_eval_single": 1000 * t_single / n_masks,
        "speedup": t_single / t_batched,
        "max_abs_diff": float((batched - single).abs().max()),
    }


def scalpel_ratio(model, tok, steps: int, dev: torch.device) -> dict:
    from bench_scalpel_fit import run_bare, run_editkit

    from editkit.methods.lora import resolve_targets
    from editkit.methods.scalpel.fit import ScalpelBatches
    from editkit.methods.scalpel.params import ScalpelParams
    from editkit.model.anatomy import find_anatomy

    p = ScalpelParams(checkpoint_every=max(1, steps // 2))
    names = resolve_targets(find_anatomy(model), list(p.targets), p.layers)
    texts = [r["text"] for r in builtin_rows("general_text", "train")]
    make = ScalpelBatches(tok, builtin_rows("moral", "train"), texts, p, seed=0)
    batches = [make(i, 0) for i in range(steps)]
    with tempfile.TemporaryDirectory() as d:  # warm-up: every batch shape once, both loops
        run_bare(model, names, p, batches)
        run_editkit(model, names, p, batches[:2], Path(d))
    tot = {"editkit": [0.0, 0], "bare": [0.0, 0]}
    for which in ("editkit", "bare", "bare", "editkit"):
        if which == "editkit":
            with tempfile.TemporaryDirectory() as d:
                dt, n = run_editkit(model, names, p, batches, Path(d))
        else:
            dt, n = run_bare(model, names, p, batches)
        tot[which][0] += dt
        tot[which][1] += n
    ek, bare = (tot[k][1] / tot[k][0] for k in ("editkit", "bare"))
    return {"steps": steps, "editkit_tok_s": ek, "bare_tok_s": bare, "ratio": ek / bare}


def refusal_activations(model, tok, n_prompts: int, dev: torch.device) -> dict:
    from editkit.methods.refusal.direction import residual_activations
    from editkit.model.sizing import model_eval_batch_size

    prompts = [r["prompt"] for r in builtin_rows("moral") + builtin_rows("capitals")][: 2 * n_prompts]
    default = model_eval_batch_size(model)
    out = {"prompts": len(prompts), "layers": model.config.num_hidden_layers, "default_batch": default}
    for label, bs in (("batch_16", 16), ("default", default)):
        residual_activations(model, tok, prompts[:bs], 1, bs, chat=False)  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        residual_activations(model, tok, prompts[:n_prompts], 1, bs, chat=False)
        residual_activations(model, tok, prompts[n_prompts:], 1, bs, chat=False)
        sync(dev)
        out[f"s_{label}"] = time.perf_counter() - t0
    return out


RECIPE = """\
name: gpu-check
model: {{id: {model}, dtype: {dtype}{device_map}}}
method:
  name: scalpel
  rank: 2
  alpha: 16.0
  targets: [q, k, v, o, gate, up, down]
  lr: 0.002
  steps: {steps}
  batch_size: 8
  lambda_text: 5.0
  text_batch_size: 4
  text_max_length: 64
  val_fraction: 0.15
  eval_every: 10
  early_stop_gap: 0.1
  checkpoint_every: 20
data:
  target: moral
  general: builtin
  heldout: auto
eval:
  blimp: false
{max_items}export:
  adapter: true
seed: 0
"""


def apply_end_to_end(model, tok, work: Path, tiny: bool, dev: torch.device) -> dict:
    """Save the model, run ``editkit apply`` on it in a child process, read the stage times back."""
    from editkit.run.events import read_events

    src = work / "model"
    t0 = time.perf_counter()
    model.save_pretrained(src)
    tok.save_pretrained(src)
    save_s = time.perf_counter() - t0
    recipe = work / "recipe.yaml"
    recipe.write_text(
        RECIPE.format(
            model=src,
            dtype="float32" if tiny else "bfloat16",
            device_map=", device_map: cuda" if dev.type == "cuda" else "",
            steps=3 if tiny else 80,
            max_items="  max_items: 8\n  drift_prompts: 4\n" if tiny else "",
        )
    )
    run = work / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "editkit", "apply", str(recipe), "--out", str(run)],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
    )
    wall = time.perf_counter() - t0
    out = {"save_s": save_s, "wall_s": wall, "returncode": proc.returncode}
    if proc.returncode != 0:
        out["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return out
    stages = {}
    for ev in read_events(run):
        if ev.get("type") == "stage_end":
            stages[ev["stage"]] = ev.get("seconds")
    out["stages"] = stages
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    out["export_max_abs_logit_diff"] = (metrics.get("export") or {}).get("max_abs_logit_diff")
    out["steps_run"] = ((metrics.get("edit") or {}).get("info") or {}).get("steps_run")
    return out


def correctness(tok, dev: torch.device) -> dict:
    """fp32 on the device: batched and one-mask-per-forward scores agree."""
    model = build("llama-1b", True, len(tok), dev, torch.float32)
    r = heads_batching(model, tok, n_masks=8, n_items=8)
    return {"max_abs_diff_fp32": r["max_abs_diff"]}


# ------------------------------------------------------------------------------------------------------


def fmt(x, nd=2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}" if math.isfinite(x) else str(x)
    return str(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--tiny", action="store_true", help="tiny shapes on the CPU in fp32 (seconds): the CI test"
    )
    ap.add_argument("--json", default=None, help="also write every number as JSON here")
    ap.add_argument("--skip", nargs="*", default=[], choices=["heads", "scalpel", "refusal", "apply"])
    ap.add_argument("--steps", type=int, default=None, help="SCALPEL steps per timed loop")
    args = ap.parse_args(argv)

    tiny = args.tiny
    dev = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    if dev.type == "cpu" and not tiny:
        print("no CUDA device: running the --tiny check instead", file=sys.stderr)
        tiny = True
    dtype = torch.float32 if tiny else torch.bfloat16
    if dev.type == "cpu":
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    t_all = time.perf_counter()
    tok = train_tokenizer(600 if tiny else 8192)
    res: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "tiny": tiny}
    import editkit

    res["editkit"] = getattr(editkit, "__version__", "?")
    res["torch"] = torch.__version__
    failures: list[str] = []

    def note(msg: str) -> None:
        print(f"[{time.perf_counter() - t_all:6.1f}s] {msg}", file=sys.stderr, flush=True)

    res["correctness"] = correctness(tok, dev)
    if res["correctness"]["max_abs_diff_fp32"] > 1e-4:
        failures.append("fp32 batched vs single masks differ by more than 1e-4")

    # 1B: heads, SCALPEL, then apply (the parent frees the model first)
    model = build("llama-1b", tiny, len(tok), dev, dtype)
    note(f"llama-1b built ({n_params(model):.2f} B parameters)")
    if "heads" not in args.skip:
        res["heads/llama-1b"] = heads_batching(model, tok, 32, 32)
        note("llama-1b heads timed")
    if "scalpel" not in args.skip:
        res["scalpel/llama-1b"] = scalpel_ratio(model, tok, args.steps or (4 if tiny else 20), dev)
        note("llama-1b SCALPEL timed")
    if "apply" not in args.skip:
        with tempfile.TemporaryDirectory() as d:
            res["apply/llama-1b"] = apply_end_to_end(model, tok, Path(d), tiny, dev)
            del model
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if res["apply/llama-1b"]["returncode"] != 0:
            failures.append(f"editkit apply failed: {res['apply/llama-1b'].get('error')}")
        note("llama-1b apply done")
    else:
        del model
    for shape in ("qwen2-1.5b", "llama-8b"):
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        model = build(shape, tiny, len(tok), dev, dtype)
        note(f"{shape} built ({n_params(model):.2f} B parameters)")
        if "heads" not in args.skip:
            res[f"heads/{shape}"] = heads_batching(model, tok, 32, 32)
        if shape == "llama-8b" and "refusal" not in args.skip:
            res[f"refusal/{shape}"] = refusal_activations(model, tok, 128, dev)
        note(f"{shape} timed")
        del model
    res["total_s"] = time.perf_counter() - t_all

    for k, v in res.items():
        if k.startswith("heads/") and not math.isfinite(v["speedup"]):
            failures.append(f"{k}: no speed measured")
    rows = [("figure", "value", "detail")]
    for k, v in res.items():
        if k.startswith("heads/"):
            rows.append(
                (
                    f"batched ÷ single masks, {k[6:]}",
                    f"{v['speedup']:.2f}×",
                    f"{v['ms_per_eval_batched']:.1f} vs {v['ms_per_eval_single']:.1f} ms/eval; "
                    f"{v['heads']} heads; 32 masks × {v['rows_per_mask']} rows × {v['tokens_per_row']} tok; "
                    f"batch_rows {v['batch_rows']} ({v['masks_per_forward']} masks/forward); "
                    f"max |Δ| {v['max_abs_diff']:.2g}",
                )
            )
        elif k.startswith("scalpel/"):
            rows.append(
                (
                    f"SCALPEL fit ÷ bare PEFT loop, {k[8:]}",
                    f"{v['ratio']:.2f}",
                    f"{v['editkit_tok_s']:.0f} vs {v['bare_tok_s']:.0f} tok/s, {v['steps']} steps × 2 each",
                )
            )
        elif k.startswith("refusal/"):
            rows.append(
                (
                    f"refusal activations, {k[8:]}",
                    f"{v['s_default']:.2f} s",
                    f"{v['prompts']} prompts × {v['layers']} layers at batch {v['default_batch']} "
                    f"(default); {v['s_batch_16']:.2f} s at 16",
                )
            )
        elif k.startswith("apply/"):
            st = v.get("stages") or {}
            rows.append(
                (
                    f"editkit apply remove_moral, {k[6:]}",
                    f"{v['wall_s']:.1f} s" if v["returncode"] == 0 else "FAILED",
                    ", ".join(f"{s} {fmt(t, 1)}" for s, t in st.items())
                    + f"; export |Δlogit| {fmt(v.get('export_max_abs_logit_diff'), 4)}"
                    if v["returncode"] == 0
                    else str(v.get("error")),
                )
            )
    rows.append(
        ("fp32 batched vs single (tiny, device)", f"{res['correctness']['max_abs_diff_fp32']:.1e}", "≤ 1e-4")
    )
    rows.append(("total", f"{res['total_s']:.0f} s", f"{res['device']}, torch {res['torch']}, tiny={tiny}"))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
    print()
    for i, (a, b, c) in enumerate(rows):
        print(f"| {a:<{w0}} | {b:>{w1}} | {c} |")
        if i == 0:
            print(f"| {'-' * w0} | {'-' * w1} | --- |")
    for f in failures:
        print(f"FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
