"""In-memory merge+export vs shard-streamed merge: wall time and peak RSS, each in its own subprocess.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_export.py            # demo + synthetic
    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_export.py --no-synthetic
    .venv/bin/python bench/bench_export.py --synthetic-layers 4 --json out.json

The demo model is the cached SmolLM2-135M-Instruct folder (538 MB fp32). The synthetic checkpoint is a
Llama config with big layers (hidden 4096, MLP 11008, 4 layers, untied 49152-token embeddings ≈ 4.45 GB
fp32) whose random weights are written shard by shard with ``safetensors.torch.save_file`` — no model is
instantiated — into a temporary folder that is deleted afterwards.

Four modes, each in a fresh interpreter: ``in_memory`` (load, merge, ``export_model``) and ``streaming``
(``stream_merge``) as in ``editkit export``; ``loaded_in_memory`` / ``loaded_streaming`` as in the
pipeline, where the model is already loaded (timed and measured from after the load: VmHWM is reset via
``/proc/self/clear_refs``). The parent reads each child's own rusage with ``os.wait4`` (``ru_maxrss``);
"above baseline" is the peak minus the RSS when the measured phase began. The edit is refusal-like (ProjectOut on every residual writer) plus a head knockout and a LowRank
delta, so every op kind is merged. The two outputs are compared tensor by tensor (must be identical).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_kib(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# ------------------------------------------------------------------------------------------------------
# child: one export
# ------------------------------------------------------------------------------------------------------


def child(mode: str, src: str, edit_dir: str, dest: str, shard: str) -> None:
    import torch

    torch.set_num_threads(2)
    from editkit.edit.edit import Edit
    from editkit.export.streaming import stream_merge
    from editkit.export.write import export_model

    base_kib = _rss_kib()
    t0 = time.perf_counter()
    edit = Edit.load(edit_dir)
    if mode.startswith("loaded_"):
        # the pipeline's situation: the model is already in memory when the export starts
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(src)
        with torch.no_grad():  # a pipeline has run the model: every weight is resident, not a lazy mmap
            for p in model.parameters():
                p.sum()
        base_kib = _rss_kib()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: measure the export alone
        t0 = time.perf_counter()
        if mode == "loaded_in_memory":
            edit.merge_into(model)
            export_model(model, tok, Path(dest), max_shard_size=shard)
        else:
            stream_merge(edit, src, dest)
    elif mode == "in_memory":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(src)
        edit.merge_into(model)
        export_model(model, tok, Path(dest), max_shard_size=shard)
    else:
        stream_merge(edit, src, dest)
    print(
        json.dumps(
            {"seconds": time.perf_counter() - t0, "baseline_rss_kib": base_kib, "hwm_kib": _rss_kib("VmHWM")}
        )
    )


def run_child(mode: str, src: Path, edit_dir: Path, dest: Path, shard: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(src), str(edit_dir), str(dest), shard]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)  # this child's own rusage (ru_maxrss in KiB)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        out, err = out.read(), err.read()
    if p.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{err[-3000:]}")
    rep = json.loads(out.strip().splitlines()[-1])
    # whole-process peak for the cold modes; export-phase peak (VmHWM reset after loading) for loaded_*
    peak_kib = rep["hwm_kib"] if mode.startswith("loaded_") else max(usage.ru_maxrss, rep["hwm_kib"])
    return {
        "mode": mode,
        "wall_s": round(wall, 2),
        "export_s": round(rep["seconds"], 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "above_baseline_mib": round((peak_kib - rep["baseline_rss_kib"]) / 1024, 1),
    }


# ------------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------------


def make_edit(src: Path, dest: Path) -> Path:
    """Refusal-like edit from the config alone: ProjectOut on all o/down projections, a head, a LowRank."""
    import torch
    from transformers import AutoConfig

    from editkit.edit.edit import Edit, LowRank, ProjectOut, ScaleInputs

    cfg = AutoConfig.from_pretrained(src)
    h, n = cfg.hidden_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    g = torch.Generator().manual_seed(0)
    r = torch.randn(h, generator=g)
    ops = [ScaleInputs("model.layers.0.self_attn.o_proj", index=list(range(hd, 2 * hd)), factor=0.0)]
    ops += [ProjectOut(f"model.layers.{i}.self_attn.o_proj", direction=r) for i in range(1, n)]
    ops += [ProjectOut(f"model.layers.{i}.mlp.down_proj", direction=r) for i in range(n)]
    ops.append(
        LowRank(
            f"model.layers.{n - 1}.self_attn.q_proj",
            A=torch.randn(2, h, generator=g) * 0.01,
            B=torch.randn(cfg.num_attention_heads * hd, 2, generator=g) * 0.01,
            scale=8.0,
        )
    )
    return Edit("bench", ops).save(dest)


def make_synthetic(folder: Path, demo: Path, layers: int, shard_bytes: int) -> int:
    """Random fp32 Llama checkpoint written shard by shard; returns bytes of weights."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    cfg = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=layers,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=49152,
        tie_word_embeddings=False,
        max_position_embeddings=2048,
    )
    folder.mkdir(parents=True)
    cfg.save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(demo / f, folder / f)
    h, m = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (cfg.vocab_size, h))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (m, h)),
            (p + "mlp.up_proj.weight", (m, h)),
            (p + "mlp.down_proj.weight", (h, m)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (cfg.vocab_size, h))]
    g = torch.Generator().manual_seed(0)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 4 * int(torch.Size(shape).numel())
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    weight_map, total = {}, 0
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, shape in group:
            t = torch.ones(shape) if "norm" in name else torch.randn(shape, generator=g) * 0.02
            tensors[name] = t
            weight_map[name] = fname
            total += t.numel() * 4
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        del tensors
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
    )
    return total


def same_weights(a: Path, b: Path) -> bool:
    """Tensor-by-tensor equality of two exports (streamed one tensor at a time)."""
    import torch

    from editkit.export.checkpoint import open_checkpoint, read_tensor

    ea, eb = open_checkpoint(a).entries, open_checkpoint(b).entries
    if set(ea) != set(eb):
        return False
    return all(torch.equal(read_tensor(ea[k]), read_tensor(eb[k])) for k in ea)


MODES = ("in_memory", "streaming", "loaded_in_memory", "loaded_streaming")


def bench_case(name: str, src: Path, work: Path, shard: str, repeat: int) -> list[dict]:
    edit_dir = make_edit(src, work / f"{name}-edit")
    rows = []
    for _ in range(repeat):
        for mode in MODES:
            dest = work / f"{name}-{mode}"
            if dest.exists():
                shutil.rmtree(dest)
            row = run_child(mode, src, edit_dir, dest, shard)
            row["case"] = name
            if mode != "in_memory":  # every output must equal the in-memory export, tensor for tensor
                row["identical"] = same_weights(work / f"{name}-in_memory", dest)
                shutil.rmtree(dest)
            rows.append(row)
            print(json.dumps(row), flush=True)
    for row in rows:
        row.setdefault("identical", True)
    shutil.rmtree(work / f"{name}-in_memory", ignore_errors=True)
    return rows


def summarize(rows: list[dict]) -> str:
    lines = [
        "| case | mode | wall s | export s | peak RSS MiB | above baseline MiB | identical |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    best: dict[tuple[str, str], dict] = {}
    for r in rows:
        key = (r["case"], r["mode"])
        if key not in best or r["wall_s"] < best[key]["wall_s"]:
            best[key] = r
    for (case, mode), r in best.items():
        lines.append(
            f"| {case} | {mode} | {r['wall_s']} | {r['export_s']} | {r['peak_rss_mib']} | "
            f"{r['above_baseline_mib']} | {r['identical']} |"
        )
    for case in dict.fromkeys(c for c, _ in best):
        for cold, hot in (("in_memory", "streaming"), ("loaded_in_memory", "loaded_streaming")):
            a, b = best[(case, cold)], best[(case, hot)]
            lines.append(
                f"\n{case}: {hot}/{cold} wall {b['wall_s'] / a['wall_s']:.2f}×, "
                f"export {b['export_s'] / a['export_s']:.2f}×, peak RSS {b['peak_rss_mib'] / a['peak_rss_mib']:.2f}×, "
                f"above-baseline {b['above_baseline_mib'] / max(a['above_baseline_mib'], 1e-9):.3f}×"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", default=str(Path.home() / ".cache/editkit/models/SmolLM2-135M-Instruct"))
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--synthetic-layers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    demo = Path(args.demo)
    work = Path(tempfile.mkdtemp(prefix="editkit-bench-export-", dir=args.workdir))
    rows: list[dict] = []
    try:
        rows += bench_case("demo", demo, work, "2GB", args.repeat)
        if not args.no_synthetic:
            free = shutil.disk_usage(work).free
            need = 3 * 4.6e9 * args.synthetic_layers / 4
            if free < need:
                raise SystemExit(f"need {need / 1e9:.1f} GB free in {work}, have {free / 1e9:.1f} GB")
            t0 = time.perf_counter()
            size = make_synthetic(work / "synthetic", demo, args.synthetic_layers, 1 << 30)
            print(
                f"synthetic checkpoint: {size / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            rows += bench_case(
                f"synthetic-{size / 2**30:.1f}GiB", work / "synthetic", work, "1GB", args.repeat
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summarize(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        child(*sys.argv[2:7])
    else:
        main()
