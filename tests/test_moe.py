"""Mixture-of-experts models (fused 3-D expert tensors): anatomy, ops on single experts, the refusal
projection on every expert, exact streamed export, router statistics, LoRA read-out, GGUF.

Every model is a tiny random config of its family from ``tests/tiny.py`` (no small real MoE is on PyPI).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from editkit.edit.edit import Edit
from editkit.edit.ops import (
    LowRank,
    NormPreservingProjectOut,
    ProjectOut,
    ScaleInputs,
    WriterProjectOut,
    op_kinds,
)
from editkit.errors import AnatomyError, EditkitError
from editkit.export.checkpoint import open_checkpoint
from editkit.export.streaming import stream_merge
from editkit.export.write import check_export, export_model, logits_of, probe_inputs
from editkit.model.anatomy import find_anatomy
from editkit.model.moe import ExpertDown
from editkit.model.targets import moe_spec, target_module
from tests.tiny import CORPUS, MOE_FAMILIES, tiny_config, tiny_model, tiny_tokenizer

PROMPTS = ["The quick brown fox jumps", "Paris is the capital of"]

#: family: (router, shared expert down projection or None) in layer 1
ROLES = {
    "mixtral": ("model.layers.1.mlp.gate", None),
    "qwen2_moe": ("model.layers.1.mlp.gate", "model.layers.1.mlp.shared_expert.down_proj"),
    "qwen3_moe": ("model.layers.1.mlp.gate", None),
    "olmoe": ("model.layers.1.mlp.gate", None),
    "gpt_oss": ("model.layers.1.mlp.router", None),
}


def _random_biases(model) -> None:
    """Random init leaves the experts' biases at 0, which would hide a wrong bias merge (GPT-OSS)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and ".experts." in name:  # larger ones elsewhere would decide routing
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _read_all(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                out[k] = st.get_tensor(k)
    return out


# ------------------------------------------------------------------------------------------------------
# anatomy
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_anatomy_names_experts_routers_and_shared_experts(family):
    model, _ = tiny_model(family)
    a = find_anatomy(model)
    router, shared = ROLES[family]
    la = a.layer(1)
    assert (a.moe_family, a.n_experts, a.experts_per_token, a.expert_intermediate_size) == (family, 4, 2, 32)
    assert la.experts == "model.layers.1.mlp.experts" and la.router == router and la.down == shared
    assert la.expert_downs == tuple(f"model.layers.1.mlp.experts.{e}.down_proj" for e in range(4))
    assert la.residual_writers == (
        "model.layers.1.self_attn.o_proj",
        *([shared] if shared else []),
        *la.expert_downs,
    )
    layout = a.expert_layout
    fused = getattr(model.get_submodule(la.experts), layout.down)
    for e, name in enumerate(la.expert_downs):
        view = target_module(model, name)
        assert isinstance(view, ExpertDown) and view is a.module(name)  # one view object per expert
        assert tuple(view.weight.shape) == (64, 32)  # [out, in], whatever the stored orientation
        want = fused[e].t() if layout.transposed else fused[e]
        assert view.weight.data_ptr() == want.data_ptr() and torch.equal(view.weight, want)
    assert layout.transposed == (family == "gpt_oss") and (layout.down_bias is not None) == (
        family == "gpt_oss"
    )
    groups = a.neuron_groups(1)
    assert [g[0] for g in groups] == (["shared"] if shared else []) + ["e0", "e1", "e2", "e3"]
    assert [g[2] for g in groups] == ([48] if shared else []) + [32] * 4


def test_mixed_dense_and_moe_layers():
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("qwen3_moe", len(tok), mlp_only_layers=[0]))
    a = find_anatomy(model)
    assert not a.layer(0).is_moe and a.layer(0).down == "model.layers.0.mlp.down_proj"
    assert a.layer(0).residual_writers == ("model.layers.0.self_attn.o_proj", "model.layers.0.mlp.down_proj")
    assert a.layer(1).is_moe and len(a.layer(1).residual_writers) == 5
    assert a.intermediate_size == 128 and a.expert_intermediate_size == 32
    assert [g[0] for g in a.neuron_groups(0)] == ["mlp"] and a.neuron_groups(0)[0][2] == 128


@pytest.mark.parametrize("family", [f for f in MOE_FAMILIES if moe_spec(f)["checkpoint_down"]])
def test_checkpoint_names_are_what_transformers_saves(family, tmp_path):
    """The data file's per-expert checkpoint name is the one save_pretrained writes (a drift guard)."""
    model, _ = tiny_model(family)
    model.save_pretrained(tmp_path)
    keys = set(open_checkpoint(tmp_path).entries)
    tpl = moe_spec(family)["checkpoint_down"]
    assert {f"model.layers.{li}.{tpl.format(e=e)}" for li in range(2) for e in range(4)} <= keys
    assert not any(k.endswith("experts.down_proj") for k in keys)


def test_another_moe_is_refused_in_one_line(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from editkit.cli.main import app
    from tests.tiny import save_tiny

    model, _ = tiny_model("phimoe")
    with pytest.raises(AnatomyError) as e:
        find_anatomy(model)
    msg = str(e.value)
    assert msg == (
        "unsupported mixture-of-experts architecture PhimoeForCausalLM (model_type 'phimoe'): found 3-D expert "
        "tensor model.layers.0.mlp.experts.gate_up_proj (4, 64, 64); editkit knows the experts of mixtral, "
        "qwen2_moe, qwen3_moe, olmoe, gpt_oss"
    )
    save_tiny("phimoe", tmp_path / "phimoe")
    (tmp_path / "t.jsonl").write_text(
        "".join(
            json.dumps({"prompt": "Up is", "correct": " down", "incorrect": " up", "split": s}) + "\n"
            for s in ("train", "test")
        )
    )
    recipe = {
        "name": "moe",
        "model": str(tmp_path / "phimoe"),
        "method": {"name": "neurons", "neurons": [[0, 1]]},
        "data": {"target": str(tmp_path / "t.jsonl"), "heldout": []},
        "eval": {"blimp": False, "robustness": False},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["apply", str(tmp_path / "r.yaml"), "--runs", str(tmp_path / "runs")])
    out = result.output.strip()
    assert result.exit_code == 2 and len(out.splitlines()) == 1 and msg in out, out
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------------------------
# ops on single experts: hook form ≡ merge form, and Edit.apply is the merge exactly
# ------------------------------------------------------------------------------------------------------


def _expert_case(kind: str, a, model, g: torch.Generator) -> Edit:
    r = torch.randn(a.hidden_size, generator=g)
    writers = a.residual_writers()
    experts = [n for la in a.layers for n in la.expert_downs]
    cases = {
        "scale_inputs": lambda: [ScaleInputs(n, index=[0, 5, 17], factor=0.25) for n in experts[1::2]],
        "low_rank": lambda: [
            LowRank(
                n,
                A=torch.randn(2, a.expert_intermediate_size, generator=g) * 0.3,
                B=torch.randn(a.hidden_size, 2, generator=g) * 0.3,
                scale=4.0,
            )
            for n in experts[::3]
        ],
        "project_out": lambda: [ProjectOut(n, direction=r.clone(), strength=0.7) for n in writers],
        "project_out_norm": lambda: [NormPreservingProjectOut(n, direction=r.clone()) for n in writers],
        # row norms on the attention writers; a stored update (the null-space option) and column norms on the
        # experts' and shared experts' down projections
        "project_out_writer": lambda: [
            WriterProjectOut(n, direction=r.clone(), strength=1.2, norm="row")
            if n.endswith("o_proj")
            else WriterProjectOut(
                n,
                direction=r.clone(),
                strength=0.8,
                update=torch.randn(_inputs_of(model, n), generator=g) * 0.1,
                norm="column",
            )
            for n in writers
        ],
    }
    return Edit("moe", cases[kind]())


def _inputs_of(model, name: str) -> int:
    """The input width of a writer: a dense Linear's in_features, an expert's intermediate size."""
    m = target_module(model, name)
    return m.in_features if hasattr(m, "in_features") else m.weight.shape[-1]


@pytest.mark.parametrize("kind", op_kinds())
@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_op_hook_equals_merge_on_fused_experts(family, kind):
    model, tok = tiny_model(family)
    _random_biases(model)
    a = find_anatomy(model)
    edit = _expert_case(kind, a, model, torch.Generator().manual_seed(1))
    x = probe_inputs(tok, PROMPTS)
    base = logits_of(model, x)
    handles = []
    for op in edit.ops:  # each op's own hook on its expert (editkit's per-expert loop runs the experts)
        handles += op.hook(target_module(model, op.module))
    try:
        by_hooks = logits_of(model, x)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(logits_of(model, x), base)  # the experts module computes as before again
    assert not torch.allclose(by_hooks, base, atol=1e-4)
    with edit.applied(model):
        applied = logits_of(model, x)
    assert torch.equal(logits_of(model, x), base)
    merged = copy.deepcopy(model)
    edit.merge_into(merged)
    assert (logits_of(merged, x) - by_hooks).abs().max() <= 1e-4
    assert torch.equal(logits_of(merged, x), applied)  # what is evaluated is what is exported


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_merge_touches_only_the_edited_experts(family):
    model, _ = tiny_model(family)
    a = find_anatomy(model)
    name = a.layer(0).expert_downs[2]
    fused = getattr(model.get_submodule(a.layer(0).experts), a.expert_layout.down)
    before = fused.detach().clone()
    Edit("one", [ScaleInputs(name, index=[3], factor=0.0)]).merge_into(model)
    view = target_module(model, name)
    assert (
        torch.equal(view.weight[:, 3], torch.zeros(64)) and view.weight[:, 3].data_ptr() >= fused.data_ptr()
    )
    changed = [e for e in range(4) if not torch.equal(fused[e], before[e])]
    assert changed == [2]


# ------------------------------------------------------------------------------------------------------
# refusal: every expert's down projection (and the shared expert's) is a residual writer
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_preserving", [False, True])
@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_refusal_projection_reaches_every_expert(family, norm_preserving):
    from editkit.methods.refusal.edit import project_edit
    from editkit.methods.refusal.params import RefusalParams

    model, tok = tiny_model(family)
    _random_biases(model)
    a = find_anatomy(model)
    r = torch.randn(a.hidden_size, generator=torch.Generator().manual_seed(3))
    r = r / r.norm()
    edit = project_edit(a, r, RefusalParams(norm_preserving=norm_preserving), strength=1.0)
    writers = a.residual_writers()
    assert edit.modules == writers and sum("experts." in n for n in writers) == 8
    norms0 = {n: a.module(n).weight.detach().norm(dim=0).clone() for n in writers}
    edit.merge_into(model)
    for n in writers:  # rᵀW = 0 for every writer, bias included; column norms kept when asked
        w = a.module(n).weight.detach()
        assert (r @ w).abs().max() <= 1e-5 * w.abs().max(), n
        b = getattr(a.module(n), "bias", None)
        if isinstance(b, torch.Tensor):
            assert abs(float(r @ b.detach())) <= 1e-6, n
        if norm_preserving:
            assert torch.allclose(w.norm(dim=0), norms0[n], rtol=1e-5), n
    seen: dict[str, float] = {}  # and in activations: no expert writes along r on real tokens
    hooks = []
    for n in writers:
        if "experts." in n:

            def grab(mod, args, out, n=n):
                seen[n] = max(seen.get(n, 0.0), float((out @ r).abs().max() / out.abs().max()))

            hooks.append(a.module(n).register_forward_hook(grab))
    x = probe_inputs(tok, CORPUS)
    try:
        logits_of(model, x)
    finally:
        for h in hooks:
            h.remove()
    assert sorted(seen) == sorted(n for n in writers if "experts." in n)  # every expert got tokens
    assert max(seen.values()) <= 1e-5, seen


# ------------------------------------------------------------------------------------------------------
# export: streamed ≡ in memory, bit for bit, and the export check compares every expert tensor
# ------------------------------------------------------------------------------------------------------


def _mixed_moe_edit(a) -> Edit:
    g = torch.Generator().manual_seed(0)
    r = torch.randn(a.hidden_size, generator=g)
    ops = [
        NormPreservingProjectOut(n, direction=r.clone(), strength=0.8) for n in a.layer(1).residual_writers
    ]
    ops += [ScaleInputs(a.layer(0).expert_downs[1], index=[0, 3], factor=0.0)]
    ops += [ScaleInputs(a.layer(0).expert_downs[3], index=[5], factor=0.0)]
    ops += [
        LowRank(
            a.layer(0).router, A=torch.randn(2, 64, generator=g) * 0.3, B=torch.randn(4, 2, generator=g) * 0.3
        )
    ]
    return Edit("mixed-moe", ops)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_streamed_merge_equals_in_memory_bit_for_bit(family, dtype, tmp_path):
    model, tok = tiny_model(family)
    _random_biases(model)
    model.to(dtype).save_pretrained(tmp_path / "base", max_shard_size="30KB")
    tok.save_pretrained(tmp_path / "base")
    assert len(list((tmp_path / "base").glob("*.safetensors"))) >= 3
    a = find_anatomy(model)
    edit = Edit.load(_mixed_moe_edit(a).save(tmp_path / "edit"))
    dname = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=dtype)
    x = probe_inputs(tok)
    with edit.applied(loaded):
        reference = logits_of(loaded, x)
    info = stream_merge(
        edit, tmp_path / "base", tmp_path / "streamed", load_dtype=dname, max_shard_size="50KB"
    )
    assert set(info["norms"]) == set(edit.modules) and all(v > 0 for v in info["norms"].values())
    edit.merge_into(loaded)
    export_model(loaded, tok, tmp_path / "memory")
    streamed, memory, base = (_read_all(tmp_path / d) for d in ("streamed", "memory", "base"))
    assert set(streamed) == set(memory) == set(base)
    assert all(torch.equal(streamed[k], memory[k]) for k in streamed)
    changed = {k for k in base if not torch.equal(base[k], streamed[k])}
    # o_proj, router, 4 + 2 per-expert tensors (+ the shared expert's); GPT-OSS: its fused tensors (layer 1's
    # bias too) and no per-expert ones
    expected = {"qwen2_moe": 9, "gpt_oss": 5}.get(family, 8)
    assert len(changed) == expected, sorted(changed)
    result = check_export(tmp_path / "streamed", reference, x, loaded, "same")
    assert result["tensors_identical"] == len(streamed)  # every expert tensor compared, not skipped
    assert result["max_abs_logit_diff"] == 0.0 and result["edit_vs_merged_logit_diff"] == 0.0


# ------------------------------------------------------------------------------------------------------
# router statistics
# ------------------------------------------------------------------------------------------------------


def test_router_statistics_on_a_hand_built_router():
    """GPT-OSS's router has a bias: with a zero weight the bias alone picks the experts of every token."""
    from editkit.eval.routing import routing_changes, routing_section, routing_shares

    model, tok = tiny_model("gpt_oss")
    a = find_anatomy(model)
    with torch.no_grad():
        for li, bias in ((0, [3.0, 2.0, 1.0, 0.0]), (1, [0.0, 5.0, -1.0, 4.0])):
            router = model.get_submodule(a.layer(li).router)
            router.weight.zero_()
            router.bias.copy_(torch.tensor(bias))
    texts = [
        "Paris is the capital of France.",
        "Up",
        "Two plus three is five, and seven minus four is three.",
    ]
    n_tokens = sum(len(tok(t)["input_ids"]) for t in texts)
    got = routing_shares(model, tok, a, texts, batch_size=3)  # one padded batch: padding is not counted
    assert got == {
        "tokens": n_tokens,
        "layers": [0, 1],
        "shares": [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]],
    }
    after = {"tokens": n_tokens, "layers": [0, 1], "shares": [[1.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]]}
    ch = routing_changes(got, after)
    assert ch["tv_distance"] == [0.0, 0.5] and ch["max_tv_distance"] == 0.5
    assert ch["largest"][:2] == [[1, 2, 0.0, 1.0], [1, 3, 1.0, 0.0]]
    text = "\n".join(routing_section({"routing": {"base": {"target": got}, "edited": {"target": after}}}))
    assert f"| target | {n_tokens} | 0.2500 | 0.5000 (layer 1) |" in text
    assert "| 1 | 2 | 0.0000 | 1.0000 |" in text
    assert routing_section({"base": {}}) == []


# ------------------------------------------------------------------------------------------------------
# LoRA on routers and experts: editkit's read-out is the map PEFT computes
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_lora_read_out_on_routers_and_experts_equals_peft(family):
    from types import SimpleNamespace

    from editkit.methods.lora import (
        ADAPTER,
        adapter_ops,
        lora_layers,
        resolve_targets,
        unwrap_lora,
        wrap_lora,
    )

    model, tok = tiny_model(family)
    a = find_anatomy(model)
    names = resolve_targets(a, ["q", "o", "down", "router", "experts"], "all")
    peft_model, flags = wrap_lora(model, names, SimpleNamespace(rank=2, alpha=4.0, dropout=0.0), seed=0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # B starts at 0: give the adapter something to say
        for _, layer in lora_layers(peft_model, names):
            w = layer.lora_B[ADAPTER].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.2)
    x = probe_inputs(tok)
    by_peft = logits_of(peft_model, x)
    ops = adapter_ops(peft_model, names)
    model = unwrap_lora(peft_model, flags)
    assert {op.module for op in ops} >= {*a.layer(1).expert_downs, a.layer(1).router}
    base = logits_of(model, x)
    with Edit("lora", ops).applied(model):
        edited = logits_of(model, x)
    assert not torch.allclose(edited, base, atol=1e-3)
    assert (edited - by_peft).abs().max() <= 1e-5


def test_check_says_what_peft_does_on_fused_experts():
    import peft

    from editkit.methods.lora import check_param_roles
    from editkit.methods.scalpel.fit import ScalpelMethod
    from editkit.methods.scalpel.params import ScalpelParams

    moe = find_anatomy(tiny_model("qwen2_moe")[0])
    notes = ScalpelMethod().notes(ScalpelParams(), moe)
    assert notes == [
        "method.targets: on Qwen2MoeForCausalLM the experts are fused 3-D tensors; PEFT "
        f"{peft.__version__} adapts them (target_parameters) and editkit reads back each expert's down "
        "projection: add 'experts' (and 'router') to targets for them; the experts' gate/up tensors get no "
        "adapter, and gate/up/down mean the shared expert"
    ]
    assert ScalpelMethod().notes(ScalpelParams(targets=["q", "o", "router", "experts"]), moe) == []
    dense = find_anatomy(tiny_model("llama")[0])
    assert ScalpelMethod().notes(ScalpelParams(), dense) == []
    with pytest.raises(EditkitError, match=r"^method.targets: router names a mixture-of-experts part; "):
        check_param_roles(dense, ["o", "router"], 0.0)
    with pytest.raises(EditkitError, match=r"^method.dropout: 0.1: PEFT's LoRA on experts"):
        check_param_roles(moe, ["experts"], 0.1)


# ------------------------------------------------------------------------------------------------------
# neurons: (layer, expert, index)
# ------------------------------------------------------------------------------------------------------


def test_neurons_are_layer_expert_index():
    from editkit.methods.neurons.fit import NeuronsMethod, flat_neuron, neuron_edit
    from editkit.methods.neurons.params import NeuronsParams

    a = find_anatomy(tiny_model("qwen2_moe")[0])
    assert flat_neuron(a, (1, "shared", 5)) == (1, 5)
    assert flat_neuron(a, (1, 2, 7)) == (1, 48 + 2 * 32 + 7)
    edit = neuron_edit(a, [flat_neuron(a, n) for n in [(1, 2, 7), (1, "shared", 5), (0, 3, 31)]])
    assert [(op.module, op.index) for op in edit.ops] == [
        ("model.layers.0.mlp.experts.3.down_proj", [31]),
        ("model.layers.1.mlp.shared_expert.down_proj", [5]),
        ("model.layers.1.mlp.experts.2.down_proj", [7]),
    ]
    assert edit.info["neuron_units"] == [[1, 2, 7], [1, "shared", 5], [0, 3, 31]]
    bad = {
        (
            1,
            4,
            0,
        ): "method.neurons: [1, 4, 0] is out of range for this model (layer 1: experts 0..3 x 32 neurons, shared)",
        (
            1,
            5,
        ): "method.neurons: [1, 5]: layer 1 is a mixture of experts; name its neurons [layer, expert, index] "
        "(expert 0..3 or 'shared')",
        (2, 0, 0): "method.neurons: [2, 0, 0] is out of range for this model (2 layers)",
    }
    for spec, msg in bad.items():
        with pytest.raises(EditkitError) as e:
            NeuronsMethod().check(NeuronsParams(neurons=[spec]), a)
        assert str(e.value) == msg
    dense = find_anatomy(tiny_model("llama")[0])
    with pytest.raises(EditkitError, match=r"names an expert, but layer 0 has no experts"):
        NeuronsMethod().check(NeuronsParams(neurons=[(0, 1, 2)]), dense)


@pytest.mark.parametrize("family", ["qwen2_moe", "gpt_oss"])
def test_expert_neuron_attribution_is_complete_on_the_last_layer(family):
    """Scaling the last layer's neurons changes no routing downstream, so integrated gradients over its
    experts' (and shared expert's) neurons add up to F(1) − F(0) exactly up to the midpoint rule."""
    from editkit.eval.pairwise import encode_prompt_answers
    from editkit.localize.attribution import NeuronGates, answer_objective, neuron_attributions, neuron_width
    from tests.tiny import TRIPLETS

    model, tok = tiny_model(family)
    a = find_anatomy(model)
    items = [{"prompt": p, "correct": c} for p, c, _ in TRIPLETS[:3]]
    attr = neuron_attributions(model, tok, a, items, method="ig", steps=64, scope="layer", target="logprob")
    width = neuron_width(a)
    assert attr.shape == (3, 2, width) and width == (48 if family == "qwen2_moe" else 0) + 4 * 32
    enc = encode_prompt_answers(tok, [i["prompt"] for i in items], [i["correct"] for i in items])
    with torch.no_grad(), NeuronGates(model, a) as ng:
        full = answer_objective(model, enc, "logprob")
        ng.gates[1] = torch.zeros(3, width)
        off = answer_objective(model, enc, "logprob")
    diff = full - off
    assert (diff.abs() > 1e-3).all()
    assert (attr[:, 1].sum(dim=1) - diff).abs().max() <= 1e-2 * diff.abs().max()


# ------------------------------------------------------------------------------------------------------
# GGUF
# ------------------------------------------------------------------------------------------------------


def test_gguf_of_a_qwen3_moe_round_trips(tmp_path):
    from editkit.export.gguf_file import check_gguf, write_gguf

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    # transformers reads no expert width from a GGUF: the round trip needs the family's default (768)
    model = AutoModelForCausalLM.from_config(tiny_config("qwen3_moe", len(tok), moe_intermediate_size=768))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    info = write_gguf(tmp_path, kind="f16")
    import gguf

    reader = gguf.GGUFReader(tmp_path / info["file"])
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    assert shapes["blk.1.ffn_down_exps.weight"] == (768, 64, 4)  # GGUF order: (in, out, experts)
    assert shapes["blk.1.ffn_gate_inp.weight"] == (64, 4)
    assert int(reader.fields["qwen3moe.expert_count"].parts[-1][0]) == 4
    checked = check_gguf(tmp_path, kind="f16")
    assert checked["tokens_identical"] and checked["max_abs_logit_diff"] <= checked["bound"]


@pytest.mark.parametrize(
    "family,why",
    [
        ("mixtral", "the gguf library names 'mixtral' experts (llama ffn_*_exps), but transformers"),
        ("olmoe", "the gguf library names 'olmoe' experts (olmoe ffn_*_exps), but transformers"),
        ("gpt_oss", "editkit's GGUF writer has no mapping for 'gpt_oss' mixture-of-experts models"),
        ("qwen3_moe", "moe_intermediate_size is 32; transformers reads no expert width from a GGUF"),
    ],
)
def test_gguf_of_other_moe_layouts_is_refused_in_one_line(family, why):
    from editkit.export.gguf_file import check_gguf_supported

    with pytest.raises(EditkitError) as e:
        check_gguf_supported(tiny_config(family, 320))
    assert str(e.value).startswith(f"export.gguf: {why}") and "\n" not in str(e.value)


def test_neurons_card_names_the_experts_and_their_pick_rates(tmp_path):
    """A CNL fit on a tiny Qwen2-MoE: the info says which experts hold the neurons and how often their router
    picks them (measured independently here), and the card shows both."""
    from editkit.eval.routing import routing_shares
    from editkit.methods.neurons.fit import NeuronsMethod
    from editkit.methods.neurons.params import NeuronsParams
    from editkit.methods.neurons.report import NeuronsReport
    from tests.tiny import TRIPLETS, fit_context

    model, tok = tiny_model("qwen2_moe")
    items = [
        {"id": f"t{i}", "prompt": p, "correct": c, "incorrect": w} for i, (p, c, w) in enumerate(TRIPLETS)
    ]
    general = ["The quick brown fox jumps over the lazy dog."] * 4
    params = NeuronsParams(attribution="ig", steps=4, samples=8, threshold=0.2, min_share=0.25)
    ctx = fit_context(model, tok, params, {"target_train": items, "general_train": general}, tmp_path)
    info = NeuronsMethod().fit(ctx).edit.info
    rows = info["experts"]
    held: dict = {}
    for layer, expert, _ in info["neuron_units"]:
        held[(layer, expert)] = held.get((layer, expert), 0) + 1
    assert {(r["layer"], r["expert"]): r["neurons"] for r in rows} == held
    sampled = [f"{t['prompt']}{t['correct']}" for t in ctx.rng("neurons-items").sample(items, 8)]
    target = routing_shares(model, tok, ctx.anatomy, [s for i in range(2) for s in sampled[i::2]])
    for r in rows:
        want = 1.0 if r["expert"] == "shared" else target["shares"][r["layer"]][r["expert"]]
        assert r["pick_target"] == want
    text = "\n".join(NeuronsReport(info).where())
    assert "| layer | expert | neurons | picked on target | picked on general |" in text
    first = rows[0]
    assert f"| {first['layer']} | {first['expert']} | {first['neurons']} |" in text
    assert "First neurons (layer, expert, index, mean attribution): (" in text


@pytest.mark.parametrize(
    "family,widths",
    [
        ("qwen3_moe", {"moe_intermediate_size": 768}),
        ("qwen2_moe", {"moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632}),
    ],
)
def test_llama_cpp_runs_the_moe_gguf(family, widths, tmp_path):
    """llama.cpp itself (the optional ``editkit[llamacpp]`` extra) reads the stacked experts, router and shared
    expert: its logits equal the safetensors model's up to f16 rounding, every position's top token the same."""
    pytest.importorskip("llama_cpp")
    import numpy as np

    from editkit.export.gguf_file import write_gguf
    from editkit.export.llamacpp import prompt_logits

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tok), **widths)).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    write_gguf(tmp_path, kind="f16")
    ids = tok("Paris is the capital of France. Two plus three is five.")["input_ids"]
    got = prompt_logits(tmp_path / "model.gguf", [ids])[0]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(got - want).max() <= 0.01 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
