"""llama.cpp round trip of editkit's GGUF files (needs the extra: pip install -e '.[llamacpp]').

Two parts, each into a results JSON:

1. ``--model DIR`` (a safetensors model folder, e.g. a run's ``model/``; default the demo model): the GGUF
   files of each type written into a scratch copy (f16/q8_0 by editkit, q4_k_m/q5_k_m/q6_k by llama.cpp's
   quantiser from the f16 file), their sizes and write/quantise times; then each loaded in llama.cpp, the chat
   template from the file, greedy generation on fixed prompts, compared token by token with transformers
   (fp32) on the safetensors folder.

2. ``--run RUN_DIR`` (a refusal run exported with ``export.gguf``): every GGUF file in its export loaded in
   llama.cpp, the run's held-out harmful prompts (``samples-edited.json``) answered greedily with the same
   number of new tokens, and the refusal rate by editkit's keyword markers next to the run's transformers rate
   on the same prompts.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_llamacpp.py --out bench/results/llamacpp_demo.json
    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_llamacpp.py --run runs/remove-refusal-qwen-... \\
        --types q4_k_m --out bench/results/llamacpp_qwen.json

``--build`` also times ``pip wheel llama-cpp-python==0.3.36`` (compiles llama.cpp; minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "How do I kill a Python process?",
    "Is stealing from a blind beggar wrong?",
    "Give me three tips for sleeping better.",
]


def build_seconds() -> float:
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-build-") as tmp:
        t0 = time.time()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-cache-dir",
                "-w",
                tmp,
                "llama-cpp-python==0.3.36",
            ],
            check=True,
        )
        return round(time.time() - t0, 1)


@torch.no_grad()
def transformers_reference(folder: Path, prompts: list[str], n: int) -> tuple[list[dict], list]:
    """Greedy continuations and prompt logits of transformers (fp32) on the safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editkit.export.llamacpp import chat_ids

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    logits = [model(torch.tensor([x])).logits[0].numpy() for x in chat_ids(tok, prompts)]
    out = []
    for p in prompts:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False)["input_ids"]
        gen = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids) :].tolist()
        if tok.eos_token_id in gen:
            gen = gen[: gen.index(tok.eos_token_id)]
        out.append({"prompt": text, "prompt_ids": ids, "ids": gen, "text": tok.decode(gen)})
    return out, logits


def model_part(src: Path, types: list[str], n: int, check: bool, keep: Path | None = None) -> dict:
    from editkit.export.gguf_file import check_gguf, write_ggufs
    from editkit.export.llamacpp import LLAMA_CPP_BOUND, agreement, chat_generations, logits_vs_reference

    res: dict = {"source": str(src), "new_tokens": n, "prompts": PROMPTS, "files": []}
    with tempfile.TemporaryDirectory(prefix="bench-llamacpp-") as tmp:
        folder = keep or Path(tmp) / "model"  # --keep: the GGUF files stay there (for --run --gguf-dir)
        folder.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():  # the safetensors are linked, the GGUF files written beside them
            if f.is_file() and not f.name.endswith(".gguf"):
                (folder / f.name).symlink_to(f.resolve())
        res["safetensors_bytes"] = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
        infos = write_ggufs(folder, types)
        t0 = time.time()
        ref, logits = transformers_reference(folder, PROMPTS, n)
        res["transformers_seconds"] = round(time.time() - t0, 1)
        for info in infos:
            if check:
                t1 = time.time()
                info.update(check_gguf(folder, info["file"], info["type"]))
                info["check_seconds"] = round(time.time() - t1, 1)
            lg = logits_vs_reference(folder / info["file"], [x["prompt_ids"] for x in ref], logits, threads=2)
            info["llama_cpp_logits"] = lg | {"share": lg["max_abs_logit_diff"] / lg["max_abs_logit"]}
            info["llama_cpp_bound"] = LLAMA_CPP_BOUND.get(info["type"])
            g = chat_generations(folder / info["file"], PROMPTS, n, threads=2)
            rows = g["rows"]
            info["same_prompt_text"] = sum(r["prompt"] == x["prompt"] for r, x in zip(rows, ref, strict=True))
            info["same_prompt_ids"] = sum(
                r["prompt_ids"] == x["prompt_ids"] for r, x in zip(rows, ref, strict=True)
            )
            info["agreement"] = [agreement(r["ids"], x["ids"]) for r, x in zip(rows, ref, strict=True)]
            info["identical"] = sum(r["ids"] == x["ids"] for r, x in zip(rows, ref, strict=True))
            info["llama_cpp_load_seconds"], info["llama_cpp_generate_seconds"] = (
                g["load_seconds"],
                g["generate_seconds"],
            )
            info["texts"] = [r["text"] for r in rows]
            res["files"].append(info)
            print(json.dumps({k: v for k, v in info.items() if k != "texts"}), flush=True)
        res["transformers_texts"] = [x["text"] for x in ref]
    return res


def run_part(
    run_dir: Path,
    types: list[str] | None,
    limit: int | None,
    phase: str = "edited",
    gguf_dir: Path | None = None,
) -> dict:
    from editkit.eval.refusal.chat import is_refusal
    from editkit.export.llamacpp import chat_generations
    from editkit.run.events import run_model_dir

    metrics = json.loads((run_dir / "metrics.json").read_text())
    resp = (
        run_dir / f"responses-{phase}.json"
    )  # every response of the phase (older runs: samples-<phase>.json)
    if resp.exists():
        samples = json.loads(resp.read_text())["harmful"]
    else:
        samples = json.loads((run_dir / f"samples-{phase}.json").read_text())["all"]["harmful"]
    prompts, responses = samples["prompts"][:limit], samples["responses"][:limit]
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    n = recipe["method"].get("eval_max_new_tokens", 64)
    folder = gguf_dir or run_model_dir(run_dir, metrics)
    files = (metrics.get("export") or {}).get(
        "gguf"
    ) or [  # a run re-exported with `editkit export --gguf`: its files
        {"file": f.name, "type": f.stem.removeprefix("model-"), "bytes": f.stat().st_size}
        for f in sorted(folder.glob("model-*.gguf"))
    ]
    files = [g for g in files if types is None or g["type"] in types]
    res: dict = {
        "run": run_dir.name,
        "prompts": len(prompts),
        "new_tokens": n,
        "transformers": {
            "refusal_rate": sum(map(is_refusal, responses)) / len(responses),
            "phase": phase,
            "run_refusal_rate": metrics[phase].get("refusal_rate"),
            "base_refusal_rate": metrics["base"].get("refusal_rate"),
        },
        "files": [],
    }
    for g in files:
        out = chat_generations(folder / g["file"], prompts, n, threads=2)
        texts = [r["text"] for r in out["rows"]]
        verdicts = [is_refusal(t) for t in texts]
        ref = [is_refusal(t) for t in responses]
        row = {
            "file": g["file"],
            "type": g["type"],
            "bytes": g["bytes"],
            "refusal_rate": sum(verdicts) / len(verdicts),
            "same_verdict": sum(a == b for a, b in zip(verdicts, ref, strict=True)),
            "same_text": sum(a.strip() == b.strip() for a, b in zip(texts, responses, strict=True)),
            "load_seconds": out["load_seconds"],
            "generate_seconds": out["generate_seconds"],
            "tokens_per_second": round(sum(len(r["ids"]) for r in out["rows"]) / out["generate_seconds"], 2),
            "responses": texts,
        }
        res["files"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "responses"}), flush=True)
    return res


def main() -> None:
    from editkit.export.gguf_file import ALL_GGUF_TYPES
    from editkit.model.demo import ensure_demo_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a safetensors model folder (default: the demo model)")
    ap.add_argument("--run", default=None, help="a refusal run exported with export.gguf (part 2)")
    ap.add_argument("--types", nargs="*", default=None, help=f"GGUF types (default: all of {ALL_GGUF_TYPES})")
    ap.add_argument("--tokens", type=int, default=32, help="new tokens per prompt (part 1)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many harmful prompts (part 2)")
    ap.add_argument("--no-check", action="store_true", help="skip the transformers reload check (part 1)")
    ap.add_argument(
        "--phase", default="edited", help="whose responses to compare with (part 2): edited or base"
    )
    ap.add_argument("--gguf-dir", default=None, help="the GGUF files (part 2; default: the run's export)")
    ap.add_argument("--keep", default=None, help="write the GGUF files here and keep them (part 1)")
    ap.add_argument("--build", action="store_true", help="also time `pip wheel llama-cpp-python==0.3.36`")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    res: dict = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:]}
    import llama_cpp

    res["llama_cpp_python"] = llama_cpp.__version__
    if args.build:
        res["build_seconds"] = build_seconds()
    if args.run:
        gdir = Path(args.gguf_dir) if args.gguf_dir else None
        res["refusal"] = run_part(Path(args.run), args.types, args.limit, args.phase, gdir)
    else:
        src = Path(args.model) if args.model else ensure_demo_model(progress=print)
        keep = Path(args.keep) if args.keep else None
        types = list(args.types or ALL_GGUF_TYPES)
        res["round_trip"] = model_part(src, types, args.tokens, not args.no_check, keep)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
