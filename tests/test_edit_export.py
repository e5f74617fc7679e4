"""Edit ops: hooks == merge; export reloads with plain transformers; artifacts re-apply bit-for-bit."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from editkit.edit.edit import Edit, LowRank, ProjectOut, ScaleInputs
from editkit.export.write import (
    atomic_dir,
    embeddings_tied,
    export_model,
    logits_of,
    probe_inputs,
    verify_export,
)
from editkit.methods.heads.fit import head_mask_edit
from editkit.model.anatomy import find_anatomy
from editkit.model.targets import weight_out_in
from tests.tiny import tiny_model

GQA_FAMILIES = ["llama", "qwen2", "gemma3", "gpt2"]


def _inputs(tok):
    return probe_inputs(tok, ["The quick brown fox jumps", "Paris is the capital of"])


def _edits(anatomy, seed=0):
    g = torch.Generator().manual_seed(seed)
    L0, L1 = anatomy.layer(0), anatomy.layer(1)
    d_in, d_out = anatomy.intermediate_size, anatomy.hidden_size
    return {
        "heads": head_mask_edit(anatomy, [(0, 1), (1, 3)]),
        "neurons": Edit("neurons", [ScaleInputs(L1.down, index=[0, 5, 17], factor=0.0)]),
        "low_rank": Edit(
            "scalpel",
            [
                LowRank(
                    L0.down,
                    A=torch.randn(2, d_in, generator=g) * 0.1,
                    B=torch.randn(d_out, 2, generator=g) * 0.1,
                    scale=8.0,
                )
            ],
        ),
        "project_out": Edit(
            "refusal",
            [
                ProjectOut(name, direction=torch.randn(d_out, generator=g))
                for name in anatomy.residual_writers()
            ],
        ),
    }


@pytest.mark.parametrize("family", GQA_FAMILIES)
@pytest.mark.parametrize("kind", ["heads", "neurons", "low_rank", "project_out"])
def test_hooks_equal_merge_and_are_reversible(family, kind):
    model, tok = tiny_model(family)
    anatomy = find_anatomy(model)
    edit = _edits(anatomy)[kind]
    x = _inputs(tok)
    base = logits_of(model, x)
    with edit.applied(model):
        hooked = logits_of(model, x)
    assert torch.equal(logits_of(model, x), base), "hooks were not removed"
    assert (hooked - base).abs().max() > 1e-4, "the edit changed nothing"
    edit.merge_into(model)
    merged = logits_of(model, x)
    assert (merged - hooked).abs().max().item() <= 1e-4
    if kind in ("low_rank", "project_out"):  # dense edits are evaluated with the merged weights themselves
        assert torch.equal(merged, hooked)


@pytest.mark.parametrize("family", GQA_FAMILIES)
def test_export_reload_and_artifact_reapply_bit_for_bit(family, tmp_path):
    model, tok = tiny_model(family)
    anatomy = find_anatomy(model)
    edit = _edits(anatomy)["heads"]
    x = _inputs(tok)
    with edit.applied(model):
        ref = logits_of(model, x)
    edit.merge_into(model)
    edit.save(tmp_path / "edit")
    files = export_model(model, tok, tmp_path / "out")
    assert "config.json" in files and any(f.endswith(".safetensors") for f in files)
    assert verify_export(tmp_path / "out", ref, x) <= 1e-4
    assert embeddings_tied(tmp_path / "out") == anatomy.tied_embeddings

    base, _ = tiny_model(family)  # same seed → the base model
    Edit.load(tmp_path / "edit").merge_into(base)
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    state = base.state_dict()
    assert exported, "no tensors exported"
    for name, tensor in exported.items():
        assert torch.equal(state[name], tensor), f"{name} differs after re-applying the artifact"


def test_head_knockout_zeroes_only_that_heads_columns():
    model, _ = tiny_model("llama")
    a = find_anatomy(model)
    o = model.get_submodule(a.layer(1).o)
    before = weight_out_in(o)
    head_mask_edit(a, [(1, 2)]).merge_into(model)
    after = weight_out_in(o)
    cols = a.head_columns(2)
    assert cols == list(range(32, 48))
    assert torch.count_nonzero(after[:, cols]) == 0
    keep = [c for c in range(before.shape[1]) if c not in cols]
    assert torch.equal(after[:, keep], before[:, keep])


def test_project_out_leaves_no_component_along_r():
    model, _ = tiny_model("qwen2")
    a = find_anatomy(model)
    r = torch.randn(a.hidden_size)
    edit = Edit("refusal", [ProjectOut(n, direction=r) for n in a.residual_writers()])
    edit.merge_into(model)
    rn = r / r.norm()
    for name in a.residual_writers():
        w = weight_out_in(model.get_submodule(name))
        assert (rn @ w).abs().max().item() < 1e-5


def test_low_rank_merge_is_exact_delta():
    model, _ = tiny_model("llama")
    a = find_anatomy(model)
    mod = model.get_submodule(a.layer(0).o)
    w0 = weight_out_in(mod)
    A, B = torch.randn(2, w0.shape[1]), torch.randn(w0.shape[0], 2)
    Edit("scalpel", [LowRank(a.layer(0).o, A=A, B=B, scale=0.5)]).merge_into(model)
    assert torch.allclose(weight_out_in(mod), w0 + 0.5 * B @ A, atol=1e-6)


def _one_op_each():
    from editkit.edit.ops import NormPreservingProjectOut

    g = torch.Generator().manual_seed(0)
    r = torch.randn(6, generator=g)
    return [
        LowRank("m", A=torch.randn(2, 4, generator=g), B=torch.randn(6, 2, generator=g), scale=2.0),
        ProjectOut("m", direction=r),
        NormPreservingProjectOut("m", direction=r),
        ScaleInputs("m", index=[1, 3]),
    ]


@pytest.mark.parametrize("i", range(4))
def test_merge_runs_on_the_weights_device(i):
    """Op tensors are kept on the CPU; a weight on another device (a GPU; "meta" stands in for one here)
    is merged on its own device — a LowRank that added CPU factors to a CUDA weight failed (session 5)."""
    op = _one_op_each()[i]
    w, b = op.merge(torch.empty(6, 4, device="meta"), None)
    assert w.device.type == "meta" and tuple(w.shape) == (6, 4) and b is None


def test_gpt2_conv1d_orientation():
    model, _ = tiny_model("gpt2")
    a = find_anatomy(model)
    c_proj = model.get_submodule(a.layer(0).down)
    assert tuple(c_proj.weight.shape) == (a.intermediate_size, a.hidden_size)  # Conv1D stores [in, out]
    ScaleInputs(a.layer(0).down, index=[3]).hook  # noqa: B018 (attribute exists)
    Edit("neurons", [ScaleInputs(a.layer(0).down, index=[3], factor=0.0)]).merge_into(model)
    assert torch.count_nonzero(c_proj.weight[3, :]) == 0
    assert torch.count_nonzero(c_proj.weight[4, :]) == a.hidden_size


def test_tied_embedding_edit_is_refused():
    model, _ = tiny_model("qwen2")
    a = find_anatomy(model)
    assert a.tied_embeddings
    edit = Edit("refusal", [ProjectOut(a.embed, direction=torch.randn(a.hidden_size))])
    with pytest.raises(Exception, match="tied input embeddings"):
        edit.merge_into(model)


def test_merge_casts_back_to_model_dtype():
    model, tok = tiny_model("llama")
    model.to(torch.bfloat16)
    a = find_anatomy(model)
    Edit("neurons", [ScaleInputs(a.layer(0).down, index=[1], factor=0.5)]).merge_into(model)
    assert model.get_submodule(a.layer(0).down).weight.dtype == torch.bfloat16


def test_mixed_ops_on_one_module_are_rejected():
    with pytest.raises(ValueError, match="merge one edit"):
        Edit("x", [ScaleInputs("m", index=[0]), LowRank("m", A=torch.zeros(1, 2), B=torch.zeros(2, 1))])


def test_atomic_export_crash_leaves_nothing(tmp_path):
    model, tok = tiny_model("llama")
    dest = tmp_path / "model"

    def boom(tmp):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        export_model(model, tok, dest, extra=boom)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_complete(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_bf16_export_roundtrip(tmp_path):
    model, tok = tiny_model("llama")
    a = find_anatomy(model)
    head_mask_edit(a, [(0, 0)]).merge_into(model)
    export_model(model, tok, tmp_path / "bf16", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.float32  # the in-memory model is untouched
    re = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert next(re.parameters()).dtype == torch.bfloat16
