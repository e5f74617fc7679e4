"""Shard-streamed merge == in-memory merge (bit for bit), on sharded tiny checkpoints; reexport CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from editkit.edit.edit import Edit, LowRank, ProjectOut, ScaleInputs
from editkit.errors import EditkitError
from editkit.export.checkpoint import open_checkpoint
from editkit.export.module_layout import module_layouts
from editkit.export.streaming import decide_streaming, stream_merge
from editkit.export.write import export_model
from editkit.model.anatomy import find_anatomy
from editkit.model.load import LoadedModel
from editkit.model.safetensors_header import read_header
from tests.tiny import tiny_model


def _mixed_edit(anatomy, seed: int = 0) -> Edit:
    """Heads, neurons, LowRank and ProjectOut on different modules (biased ones included for Qwen2/GPT-2)."""
    g = torch.Generator().manual_seed(seed)
    L0, L1 = anatomy.layer(0), anatomy.layer(1)
    h, i = anatomy.hidden_size, anatomy.intermediate_size
    q1 = L1.q or L1.qkv  # Qwen2 q_proj has a bias; GPT-2 c_attn is a Conv1D with a bias
    q_out = (anatomy.n_heads * anatomy.head_dim) if L1.q else 3 * h
    ops = [
        ScaleInputs(L0.o, index=anatomy.head_columns(1), factor=0.0),  # a head
        ScaleInputs(L1.down, index=[0, 5, 17, i - 1], factor=0.0),  # neurons
        LowRank(
            L0.down, A=torch.randn(2, i, generator=g) * 0.1, B=torch.randn(h, 2, generator=g) * 0.1, scale=8.0
        ),
        ProjectOut(L1.o, direction=torch.randn(h, generator=g), strength=1.0),
        ProjectOut(q1, direction=torch.randn(q_out, generator=g), strength=0.7),
    ]
    return Edit("mixed", ops, info={"test": True})


def _read_all(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                out[k] = st.get_tensor(k)
    return out


def _save(family: str, path: Path, dtype=torch.float32, shard: str = "30KB") -> Path:
    model, tok = tiny_model(family)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # random init leaves biases at 0, which would hide a wrong bias merge
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    model.to(dtype).save_pretrained(path, max_shard_size=shard)
    tok.save_pretrained(path)
    return path


def _in_memory(src: Path, edit: Edit, dtype=torch.float32):
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype)
    edit.merge_into(model)
    return model


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_streamed_merge_is_bit_identical_fp32(family, tmp_path):
    src = _save(family, tmp_path / "base")
    assert len(list(src.glob("*.safetensors"))) >= 4, "checkpoint should be sharded"
    model, _ = tiny_model(family)
    edit_dir = _mixed_edit(find_anatomy(model)).save(tmp_path / "edit")
    edit = Edit.load(edit_dir)  # the saved artifact, as `editkit export` uses it

    merged = _in_memory(src, edit)
    expected = merged.state_dict()
    inputs = torch.tensor([[5, 17, 42, 99, 3, 250]])
    for shard in (None, "100KB", "10GB"):
        dest = tmp_path / f"out-{shard}"
        info = stream_merge(edit, src, dest, max_shard_size=shard)
        got = _read_all(dest)
        assert set(got) == set(open_checkpoint(src).entries)  # same tensors (no lm_head when tied)
        for k, v in got.items():
            assert v.dtype == torch.float32
            assert torch.equal(v, expected[k]), k
        assert set(info["norms"]) == set(edit.modules) and all(n > 0 for n in info["norms"].values())
        if shard is None:  # input sharding and names kept
            assert sorted(p.name for p in dest.glob("*.safetensors")) == sorted(
                p.name for p in src.glob("*.safetensors")
            )
        if shard == "10GB":
            assert [p.name for p in dest.glob("*.safetensors")] == ["model.safetensors"]
            assert not (dest / "model.safetensors.index.json").exists()
        reloaded = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32, use_safetensors=True)
        with torch.no_grad():
            assert torch.equal(reloaded(inputs).logits, merged(inputs).logits)
        assert (dest / "tokenizer.json").exists() and (dest / "config.json").exists()
    # unedited tensors really are untouched and edited ones changed
    base = _read_all(src)
    changed = {k for k in base if not torch.equal(base[k], got[k])}
    layouts = module_layouts(edit, open_checkpoint(src), merged)
    want = {lay.weight_key for lay in layouts.values()}
    want |= {layouts[op.module].bias_key for op in edit.ops if isinstance(op, ProjectOut)} - {None}
    assert changed == want
    assert any(k.endswith(".bias") for k in want) == (family != "llama")


def test_gpt2_conv1d_orientation_is_read_from_the_config(tmp_path):
    src = _save("gpt2", tmp_path / "base")
    model, _ = tiny_model("gpt2")
    edit = _mixed_edit(find_anatomy(model))
    lay = module_layouts(edit, open_checkpoint(src), model)
    assert lay["transformer.h.0.attn.c_proj"].transposed  # square 64×64: shape alone could not tell
    assert lay["transformer.h.1.attn.c_attn"].bias_key == "transformer.h.1.attn.c_attn.bias"


def test_bf16_checkpoint_is_bit_identical_and_fp32_to_bf16_within_one_ulp(tmp_path):
    model, _ = tiny_model("llama")
    edit = _mixed_edit(find_anatomy(model))
    # bf16 checkpoint: both paths read bf16, merge in fp32, cast back → identical
    src16 = _save("llama", tmp_path / "b16", dtype=torch.bfloat16)
    expected = _in_memory(src16, edit, torch.bfloat16).state_dict()
    got = _read_all(stream_merge(edit, src16, tmp_path / "o16")["path"] and tmp_path / "o16")
    assert all(v.dtype == torch.bfloat16 and torch.equal(v, expected[k]) for k, v in got.items())

    # fp32 checkpoint exported as bf16: identical to export_model(dtype="bfloat16") of the fp32 merge
    src32 = _save("llama", tmp_path / "b32")
    merged32, tok = _in_memory(src32, edit), tiny_model("llama")[1]
    export_model(merged32, tok, tmp_path / "mem16", dtype="bfloat16", max_shard_size="30KB")
    stream_merge(edit, src32, tmp_path / "st16", dtype="bfloat16")
    mem, st = _read_all(tmp_path / "mem16"), _read_all(tmp_path / "st16")
    assert set(mem) == set(st) and all(torch.equal(st[k], mem[k]) for k in mem)
    assert json.loads((tmp_path / "st16" / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "st16")
    assert next(reloaded.parameters()).dtype == torch.bfloat16

    # documented tolerance: vs a model *loaded* in bf16 and merged there (rounds twice), the streamed
    # merge (rounds once) differs by at most one bf16 ulp of the tensor's largest element
    loaded16 = _in_memory(src32, edit, torch.bfloat16).state_dict()
    worst = 0.0
    for k, v in st.items():
        ulp = 2.0 ** (torch.floor(torch.log2(loaded16[k].float().abs().max().clamp_min(1e-30))) - 7)
        diff = (v.float() - loaded16[k].float()).abs().max()
        worst = max(worst, float(diff / ulp))
    assert worst <= 1.0, worst


def test_refuses_tied_embeddings_and_unknown_modules_and_writes_nothing(tmp_path):
    src = _save("qwen2", tmp_path / "base")  # tied embeddings
    tied = Edit("x", [ProjectOut("model.embed_tokens", direction=torch.randn(64))])
    with pytest.raises(EditkitError, match="tied embeddings"):
        stream_merge(tied, src, tmp_path / "out")
    missing = Edit("x", [ScaleInputs("model.layers.7.mlp.down_proj", index=[0])])
    with pytest.raises(EditkitError, match="does not have"):
        stream_merge(missing, src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["base"]  # no temp dirs left

    def boom(tmp):
        raise RuntimeError("crash during export")

    ok = Edit("x", [ScaleInputs("model.layers.0.mlp.down_proj", index=[0])])
    with pytest.raises(RuntimeError):
        stream_merge(ok, src, tmp_path / "out", extra=boom)
    assert not (tmp_path / "out").exists()


def test_written_headers_are_well_formed(tmp_path):
    src = _save("llama", tmp_path / "base")
    model, _ = tiny_model("llama")
    dest = tmp_path / "out"
    stream_merge(_mixed_edit(find_anatomy(model)), src, dest, max_shard_size="50KB")
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in dest.glob("*.safetensors"))
    assert sorted(set(index["weight_map"].values())) == files
    total = 0
    for f in files:
        header, start = read_header(dest / f)
        assert start % 8 == 0 and header["__metadata__"] == {"format": "pt"}
        ends = sorted(h["data_offsets"] for k, h in header.items() if k != "__metadata__")
        assert ends[0][0] == 0 and all(a[1] == b[0] for a, b in zip(ends, ends[1:], strict=False))
        assert (dest / f).stat().st_size == start + ends[-1][1]
        total += ends[-1][1]
    assert index["metadata"]["total_size"] == total


def _loaded(path: Path, source: str | None = None) -> LoadedModel:
    model = AutoModelForCausalLM.from_pretrained(path)
    return LoadedModel(model, None, source or str(path), str(path), str(path), None)


def test_auto_rule(tmp_path):
    src = _save("llama", tmp_path / "base")
    lm = _loaded(src)
    assert decide_streaming("auto", lm)[0] is False  # tiny: in-memory
    assert decide_streaming("auto", lm, threshold_bytes=1)[0] is True
    assert decide_streaming(True, lm)[0] is True
    assert decide_streaming(False, lm, threshold_bytes=1)[0] is False
    lm.model.hf_device_map = {"model.embed_tokens": 0, "model.layers": "cpu"}
    assert decide_streaming("auto", lm)[0] is True  # offloaded: streaming never gathers the weights
    gguf = _loaded(src, source=str(tmp_path / "m.gguf"))
    assert decide_streaming("auto", gguf)[0] is False
    with pytest.raises(EditkitError, match="export.streaming"):
        decide_streaming(True, gguf)


def _run_dir(tmp_path: Path, family: str = "qwen2") -> Path:
    src = _save(family, tmp_path / "base")
    run = tmp_path / "run"
    (run / "edit").mkdir(parents=True)
    model, _ = tiny_model(family)
    _mixed_edit(find_anatomy(model)).save(run / "edit")
    (run / "recipe.yaml").write_text(
        "# resolved recipe\n"
        f"name: t\nmodel:\n  id: {src}\nmethod:\n  name: heads\nexport:\n  max_shard_size: 50KB\n"
    )
    return run


def test_cli_export_streaming_and_in_memory_agree(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli.main import app

    run = _run_dir(tmp_path)
    r1 = CliRunner().invoke(app, ["export", str(run), "--streaming", "--out", str(tmp_path / "st")])
    assert r1.exit_code == 0, r1.output
    r2 = CliRunner().invoke(app, ["export", str(run)])
    assert r2.exit_code == 0, r2.output
    st, mem = _read_all(tmp_path / "st"), _read_all(run / "model")
    assert set(st) == set(mem) and all(torch.equal(st[k], mem[k]) for k in st)
    for d in (tmp_path / "st", run / "model"):
        assert json.loads((d / "editkit" / "run.json").read_text())["reexported"] is True
        assert Edit.load(d / "editkit").modules == Edit.load(run / "edit").modules
    (run / "model" / "README.md").write_text("card")  # a re-export keeps the run's card
    r3 = CliRunner().invoke(app, ["export", str(run), "--streaming"])
    assert r3.exit_code == 0, r3.output
    assert (run / "model" / "README.md").read_text() == "card"
    assert json.loads((run / "model" / "editkit" / "run.json").read_text())["streaming"] is True
    again = _read_all(run / "model")
    assert all(torch.equal(again[k], mem[k]) for k in mem)
    bad = CliRunner().invoke(app, ["export", str(tmp_path / "nope"), "--streaming"])
    assert bad.exit_code == 2 and "recipe.yaml" in bad.output


@pytest.mark.slow
def test_demo_model_streamed_equals_in_memory(demo_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    anatomy = find_anatomy(model)
    g = torch.Generator().manual_seed(0)
    edit = Edit(
        "mixed",
        [ScaleInputs(anatomy.layer(20).o, index=anatomy.head_columns(2), factor=0.0)]
        + [
            ProjectOut(n, direction=torch.randn(anatomy.hidden_size, generator=g))
            for n in anatomy.residual_writers()[:20]
        ],
    )
    edit.merge_into(model)
    assert len(edit.modules) == 21
    stream_merge(edit, demo_model_dir, tmp_path / "out")
    got = _read_all(tmp_path / "out")
    sd = model.state_dict()
    assert "lm_head.weight" not in got  # tied: stays tied
    assert all(torch.equal(v, sd[k]) for k, v in got.items())


def test_shared_direction_edit_saves_and_streams(tmp_path):
    """A refusal edit uses one direction for every writer: the artifact must save (shared storage)."""
    src = _save("llama", tmp_path / "base")
    model, _ = tiny_model("llama")
    anatomy = find_anatomy(model)
    r = torch.randn(anatomy.hidden_size, generator=torch.Generator().manual_seed(5))
    edit = Edit("refusal", [ProjectOut(n, direction=r) for n in anatomy.residual_writers()])
    loaded = Edit.load(edit.save(tmp_path / "edit"))
    assert all(torch.equal(op.direction, r) for op in loaded.ops)
    stream_merge(loaded, src, tmp_path / "out")
    expected = _in_memory(src, edit).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in _read_all(tmp_path / "out").items())


def test_base_checkpoint_dir(tmp_path):
    from editkit.export.reexport import base_checkpoint_dir
    from editkit.spec.inputs import ModelSpec

    src = _save("llama", tmp_path / "base")
    assert base_checkpoint_dir(ModelSpec(id=str(src))) == src
    with pytest.raises(EditkitError, match="GGUF"):
        base_checkpoint_dir(ModelSpec(id=str(tmp_path / "x.gguf")))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(EditkitError, match="no safetensors"):
        base_checkpoint_dir(ModelSpec(id=str(tmp_path / "empty")))
