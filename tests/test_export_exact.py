"""The export check is exact in every dtype: exported tensors == the in-memory merged ones bit for bit, and
the reload (export dtype, the model's device) reproduces the merged model's logits with tolerance 0."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from editkit import apply_recipe
from editkit.errors import EditkitError
from editkit.export.streaming import stream_export_run
from editkit.export.write import check_export, export_model, reference_logits
from editkit.model.anatomy import find_anatomy
from editkit.model.load import LoadedModel
from tests.test_streaming import _mixed_edit, _save
from tests.tiny import tiny_model

DT = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _Spec:
    def __init__(self, dtype="same", max_shard_size="30KB"):
        self.dtype, self.max_shard_size = dtype, max_shard_size


@pytest.mark.parametrize("stored", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("own", ["bfloat16", "float16"])
@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_reduced_precision_export_is_checked_exactly(tmp_path, stored, own, streamed):
    family = "qwen2"  # q/k/v biases: the merged bias is checked too
    src = _save(family, tmp_path / "base", dtype=DT[stored])
    model = AutoModelForCausalLM.from_pretrained(src, dtype=DT[own]).eval()
    tok = tiny_model(family)[1]
    edit = _mixed_edit(find_anatomy(model))
    inputs, reference = reference_logits(model, tok, edit)
    dest = tmp_path / "out"
    if streamed:
        loaded = LoadedModel(model, tok, str(src), str(src), str(src), None)
        stream_export_run(edit, loaded, dest, _Spec())
    else:
        edit.merge_into(model)
        export_model(model, tok, dest, max_shard_size="30KB")
    info = check_export(dest, reference, inputs, model, "same", True, edit=edit if streamed else None)
    assert info["tolerance"] == 0.0 and info["max_abs_logit_diff"] == 0.0
    assert info["checked_dtype"] == own and info["checked_device"] == "cpu"
    assert info["tensors_identical"] == sum(len(load_file(f)) for f in dest.glob("*.safetensors"))
    assert json.loads((dest / "config.json").read_text())["dtype"] == own
    assert info["edit_vs_merged_logit_diff"] < 0.1  # hooks vs merged weights: recorded, close


@pytest.mark.parametrize("export_dtype", ["bfloat16", "float16"])
def test_fp32_model_exported_in_half_precision_is_checked_in_that_dtype(tmp_path, export_dtype):
    model, tok = tiny_model("llama")
    edit = _mixed_edit(find_anatomy(model))
    inputs, reference = reference_logits(model, tok, edit)
    edit.merge_into(model)
    export_model(model, tok, tmp_path / "out", dtype=export_dtype)
    info = check_export(tmp_path / "out", reference, inputs, model, export_dtype)
    assert info["checked_dtype"] == export_dtype and info["max_abs_logit_diff"] == 0.0
    assert info["edit_vs_merged_logit_diff"] <= 1e-4  # fp32 merge == hooks


def test_a_wrong_tensor_or_a_wrong_logit_fails_the_check(tmp_path):
    src = _save("llama", tmp_path / "base", dtype=torch.bfloat16, shard="10GB")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).eval()
    tok = tiny_model("llama")[1]
    edit = _mixed_edit(find_anatomy(model))
    inputs, reference = reference_logits(model, tok, edit)
    edit.merge_into(model)
    export_model(model, tok, tmp_path / "out")
    f = tmp_path / "out" / "model.safetensors"
    tensors = load_file(f)
    key = "model.layers.1.mlp.down_proj.weight"
    w = tensors[key].clone()
    w.view(torch.int16)[0, 0] += 1  # one ulp, one element
    save_file({**tensors, key: w}, f, metadata={"format": "pt"})
    with pytest.raises(EditkitError, match=f"tensor {key} differs"):
        check_export(tmp_path / "out", reference, inputs, model, "same")


def test_apply_bf16_streamed_and_in_memory_records_exact_checks(tmp_path, tiny_dir):
    src = _save("llama", tmp_path / "base", dtype=torch.float32)
    target = tmp_path / "t.jsonl"
    rows = [
        {"id": str(i), "split": "train" if i < 4 else "test", "prompt": "Up is the opposite of"}
        | {"correct": " down", "incorrect": " up"}
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: exact\nmodel: {{id: {src}, dtype: bfloat16}}\nmethod: {{name: heads, heads: [[0, 1], [1, 2]]}}\n"
        f"data: {{target: {target}, heldout: [{target}]}}\n"
        "eval: {blimp: false, robustness: false, control: false, max_items: 4, batch_size: 4}\n"
    )
    for streaming in ("true", "false"):
        run = apply_recipe(recipe, overrides=[f"export.streaming={streaming}"], out=tmp_path / streaming)
        ex = run.metrics["export"]
        assert ex["streaming"] is (streaming == "true")
        assert (
            ex["tolerance"] == 0.0 and ex["max_abs_logit_diff"] == 0.0 and ex["checked_dtype"] == "bfloat16"
        )
        assert ex["tensors_identical"] >= 2 * 9  # every tensor of the tiny Llama
    a = load_file(tmp_path / "true" / "model" / "model.safetensors")
    b = load_file(tmp_path / "false" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
