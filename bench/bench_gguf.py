"""GGUF export on a real model: size, write time and the round trip through transformers, per type.

    flock /tmp/editkit-heavy.lock python bench/bench_gguf.py            # the demo model (SmolLM2-135M)
    flock /tmp/editkit-heavy.lock python bench/bench_gguf.py --model runs/x/model

The model folder is copied to a scratch folder (the GGUF goes beside its safetensors, as in an export);
prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from editkit.export.gguf_file import GGUF_TYPES, ROUND_TRIP_BOUND, check_gguf, write_gguf
    from editkit.model.demo import ensure_demo_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a safetensors model folder (default: the demo model)")
    ap.add_argument("--types", nargs="*", default=list(GGUF_TYPES))
    args = ap.parse_args()
    torch.set_num_threads(2)
    src = Path(args.model) if args.model else ensure_demo_model(progress=print)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-gguf-") as tmp:
        folder = Path(tmp) / "model"
        shutil.copytree(src, folder)
        st_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        for kind in args.types:
            w = write_gguf(folder, folder / f"model-{kind}.gguf", kind)
            t0 = time.time()
            c = check_gguf(folder, f"model-{kind}.gguf", kind)
            rows.append((kind, w, c, time.time() - t0))
            print(kind, w, c, flush=True)
    print(f"\nsource: {src} ({st_bytes / 2**20:.0f} MiB safetensors)\n")
    print(
        "| type | file size | write (s) | max abs dlogit vs safetensors | max abs logit | bound | token ids | check (s) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind, w, c, secs in rows:
        print(
            f"| {kind} | {w['bytes'] / 2**20:.1f} MiB | {w['seconds']:.1f} | {c['max_abs_logit_diff']:.4f} "
            f"| {c['max_abs_logit']:.2f} | {ROUND_TRIP_BOUND[kind]} x max = {c['bound']:.3f} "
            f"| {'identical' if c['tokens_identical'] else 'DIFFER'} | {secs:.1f} |"
        )


if __name__ == "__main__":
    main()
