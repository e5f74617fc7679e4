"""Streamed vs in-memory merge of a refusal edit into a mixture-of-experts checkpoint of a real shape.

    flock /tmp/editkit-heavy.lock .venv/bin/python bench/bench_moe_export.py --layers 4 --json /tmp/moe.json

The checkpoint has Qwen3-30B-A3B's shapes (hidden 2048, 32 query / 4 KV heads of 128, 128 experts of width
768, 8 per token, 151,936-token untied embeddings) with fewer layers (``--layers``), random bf16 weights, in
the per-expert format the Hub and ``save_pretrained`` use (``mlp.experts.{e}.{gate,up,down}_proj.weight``);
it is written shard by shard with ``safetensors.torch.save_file`` (no model is instantiated) into a
temporary folder deleted afterwards. Tensor names and shapes come from transformers' own save-time
conversion of a model built on the meta device.

The edit is what ``refusal`` makes on a MoE (the norm-preserving projection on every residual writer: each
layer's o_proj and every expert's down projection), plus erased neurons in two experts and a LoRA delta on a
router. Two modes, each in a fresh interpreter: ``in_memory`` (from_pretrained in bf16, ``merge_into``,
``export_model``) and ``streaming`` (``stream_merge``, as ``editkit export --streaming``). Peak memory is each
child's own VmHWM (``/proc/self/status``): the checkpoint is written by a third interpreter, and ``ru_maxrss``
from ``os.wait4`` is not used, because Linux carries the high-water mark of the forking parent across
``exec`` into the child's. The two outputs are compared tensor by tensor (must be bit-identical).
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
SHAPE = dict(
    vocab_size=151936,
    hidden_size=2048,
    num_attention_heads=32,
    num_key_value_heads=4,
    head_dim=128,
    intermediate_size=6144,
    moe_intermediate_size=768,
    num_experts=128,
    num_experts_per_tok=8,
    norm_topk_prob=True,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(mode: str, src: str, edit_dir: str, dest: str) -> None:
    import torch

    torch.set_num_threads(2)
    from editkit.edit.edit import Edit
    from editkit.export.streaming import stream_merge
    from editkit.export.write import export_model

    t0 = time.perf_counter()
    edit = Edit.load(edit_dir)
    if mode == "in_memory":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(src)
        t_load = time.perf_counter() - t0
        edit.merge_into(model)
        export_model(model, tok, Path(dest), max_shard_size="2GB")
    else:
        t_load = 0.0
        stream_merge(edit, src, dest, max_shard_size="2GB", load_dtype="bfloat16")
    print(json.dumps({"seconds": time.perf_counter() - t0, "load_s": t_load, "hwm_kib": _rss_kib("VmHWM")}))


def run_child(mode: str, src: Path, edit_dir: Path, dest: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(src), str(edit_dir), str(dest)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        raise SystemExit(f"{mode} failed:\n{stderr[-3000:]}")
    rep = json.loads(stdout.strip().splitlines()[-1])
    return {
        "mode": mode,
        "wall_s": round(wall, 1),
        "load_s": round(rep["load_s"], 1),
        "peak_rss_gib": round(rep["hwm_kib"] / 2**20, 2),  # the child's own (ru_maxrss inherits the parent's)
        "ru_maxrss_gib": round(usage.ru_maxrss / 2**20, 2),
    }


def checkpoint_shapes(config) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor save_pretrained writes for ``config`` (meta device: no memory)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.core_model_loading import revert_weight_conversion

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    state = revert_weight_conversion(model, model.state_dict())
    return [(k, tuple(v.shape)) for k, v in state.items()]


#: ``--smoke``: the same script on a small shape (seconds), to check it runs
SMOKE = dict(
    SHAPE,
    vocab_size=1000,
    hidden_size=256,
    num_attention_heads=4,
    head_dim=64,
    moe_intermediate_size=128,
    num_experts=16,
    num_experts_per_tok=2,
)


def make_checkpoint(folder: Path, layers: int, shard_bytes: int, shape: dict = SHAPE) -> int:
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3MoeConfig

    from tests.tiny import tiny_tokenizer

    cfg = Qwen3MoeConfig(**shape, num_hidden_layers=layers, dtype="bfloat16")
    folder.mkdir(parents=True)
    cfg.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)  # the merge never reads it; from_pretrained wants one
    groups: list[list] = [[]]
    size = 0
    for name, shape in checkpoint_shapes(cfg):
        nbytes = 2 * int(torch.Size(shape).numel())
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    g = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, shape in group:
            if "norm" in name:
                tensors[name] = torch.ones(shape, dtype=torch.bfloat16)
            else:
                tensors[name] = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
            weight_map[name] = fname
            total += tensors[name].numel() * 2
        save_file(tensors, str(folder / fname), metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return total


def make_edit(src: Path, dest: Path) -> tuple[Path, int]:
    """The refusal edit on a MoE, built from the anatomy of the model on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from editkit.edit.edit import Edit
    from editkit.edit.ops import LowRank, NormPreservingProjectOut, ScaleInputs
    from editkit.model.anatomy import find_anatomy

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
    a = find_anatomy(model)
    r = torch.randn(a.hidden_size, generator=torch.Generator().manual_seed(1))
    ops = [NormPreservingProjectOut(n, direction=r.clone(), strength=0.8) for n in a.residual_writers()]
    erased = [a.layer(0).expert_downs[5], a.layer(a.n_layers - 1).expert_downs[-3]]
    for name in erased:  # neurons on other writers than the projection's (one op kind per module)
        ops = [op for op in ops if op.module != name]
        ops.append(ScaleInputs(name, index=[3, 100, a.expert_intermediate_size - 1], factor=0.0))
    g = torch.Generator().manual_seed(2)
    ops.append(
        LowRank(
            a.layer(0).router,
            A=torch.randn(4, a.hidden_size, generator=g) * 0.01,
            B=torch.randn(a.n_experts, 4, generator=g) * 0.01,
            scale=2.0,
        )
    )
    return Edit("bench-moe", ops).save(dest), len(ops)


def compare(a: Path, b: Path) -> int:
    from safetensors import safe_open

    def keys(folder):
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "pt") as st:
                out.update({k: f for k in st.keys()})  # noqa: SIM118
        return out

    ka, kb = keys(a), keys(b)
    if set(ka) != set(kb):
        raise SystemExit(f"different tensors: {sorted(set(ka) ^ set(kb))[:5]}")
    for k in ka:
        with safe_open(str(ka[k]), "pt") as x, safe_open(str(kb[k]), "pt") as y:
            if not (x.get_tensor(k) == y.get_tensor(k)).all():  # bf16: no NaN from randn
                raise SystemExit(f"tensor {k} differs between the streamed and the in-memory export")
    return len(ka)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, default=None, help="where the checkpoint is written (deleted)")
    ap.add_argument("--smoke", action="store_true", help="a small shape, to check the script runs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-moe-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        # in its own interpreter: the parent must stay small (see the module docstring)
        cmd = [sys.executable, __file__, "--make", str(work / "base"), str(args.layers), str(int(args.smoke))]
        total = int(
            subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout.split()[-1]
        )
        made = time.perf_counter() - t0
        edit_dir, n_ops = make_edit(work / "base", work / "edit")
        rows = [run_child(m, work / "base", edit_dir, work / m) for m in ("streaming", "in_memory")]
        n = compare(work / "streaming", work / "in_memory")
        result = {
            "shape": "smoke" if args.smoke else "Qwen3-30B-A3B layers",
            "layers": args.layers,
            "checkpoint_gib": round(total / 2**30, 2),
            "checkpoint_write_s": round(made, 1),
            "edit_ops": n_ops,
            "tensors_identical": n,
            "rows": rows,
        }
        print(json.dumps(result, indent=1))
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--make":
        sys.path.insert(0, str(ROOT))
        smoke = sys.argv[4] == "1"
        print(
            make_checkpoint(
                Path(sys.argv[2]),
                int(sys.argv[3]),
                2 * 10**6 if smoke else 2 * 10**9,
                SMOKE if smoke else SHAPE,
            )
        )
    else:
        sys.path.insert(0, str(ROOT))
        main()
