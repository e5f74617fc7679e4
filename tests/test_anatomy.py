"""Anatomy finds layers, heads (GQA), MLP and residual writers by names and shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from editkit.errors import AnatomyError
from editkit.model.anatomy import find_anatomy
from tests.tiny import tiny_model

EXPECTED = {
    # family: (arch, n_heads, n_kv, head_dim, mlp width, tied, o, down)
    "llama": (
        "LlamaForCausalLM",
        4,
        2,
        16,
        128,
        False,
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ),
    "qwen2": (
        "Qwen2ForCausalLM",
        4,
        2,
        16,
        128,
        True,
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ),
    "qwen3": (
        "Qwen3ForCausalLM",
        4,
        2,
        16,
        128,
        True,
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ),
    "mistral": (
        "MistralForCausalLM",
        4,
        2,
        16,
        128,
        False,
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ),
    "gemma3": (
        "Gemma3ForCausalLM",
        4,
        2,
        32,
        128,
        True,
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ),
    "phi3": (
        "Phi3ForCausalLM",
        4,
        2,
        16,
        128,
        False,
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
    ),
    "gpt2": (
        "GPT2LMHeadModel",
        4,
        4,
        16,
        256,
        True,
        "transformer.h.1.attn.c_proj",
        "transformer.h.1.mlp.c_proj",
    ),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_anatomy_per_family(family):
    model, _ = tiny_model(family)
    a = find_anatomy(model)
    arch, nh, nkv, hd, width, tied, o, down = EXPECTED[family]
    assert (a.architecture, a.n_heads, a.n_kv_heads, a.head_dim, a.intermediate_size, a.tied_embeddings) == (
        arch,
        nh,
        nkv,
        hd,
        width,
        tied,
    )
    assert a.n_layers == 2 and a.hidden_size == 64
    assert a.layer(1).o == o and a.layer(1).down == down
    assert a.residual_writers() == [a.layer(0).o, a.layer(0).down, a.layer(1).o, a.layer(1).down]
    assert a.n_total_heads == 2 * nh


def test_gqa_grouping_and_head_columns():
    a = find_anatomy(tiny_model("gemma3")[0])
    assert a.group_size == 2
    assert [a.kv_head_of(h) for h in range(4)] == [0, 0, 1, 1]
    assert a.head_slice(3) == slice(96, 128)
    with pytest.raises(IndexError):
        a.head_slice(4)


def test_fused_projections_are_named():
    a = find_anatomy(tiny_model("phi3")[0])
    assert a.layer(0).qkv == "model.layers.0.self_attn.qkv_proj" and a.layer(0).q is None
    assert a.layer(0).gate_up == "model.layers.0.mlp.gate_up_proj"
    g = find_anatomy(tiny_model("gpt2")[0])
    assert g.layer(0).qkv == "transformer.h.0.attn.c_attn" and g.layer(0).up == "transformer.h.0.mlp.c_fc"
    assert g.lora_targets(["qkv", "o"], layers=[1]) == [
        "transformer.h.1.attn.c_attn",
        "transformer.h.1.attn.c_proj",
    ]


class _Odd(nn.Module):
    """A causal-LM-shaped model whose blocks editkit cannot read."""

    def __init__(self):
        super().__init__()
        from transformers import PretrainedConfig

        self.config = PretrainedConfig(
            num_hidden_layers=2,
            num_attention_heads=2,
            hidden_size=8,
            architectures=["OddForCausalLM"],
            model_type="odd",
        )
        self.model = nn.Module()
        self.model.layers = nn.ModuleList([nn.Sequential(nn.Linear(8, 8)) for _ in range(2)])

    def forward(self, x):
        return x


def test_unknown_architecture_lists_what_is_missing():
    with pytest.raises(AnatomyError) as e:
        find_anatomy(_Odd())
    msg = str(e.value)
    assert msg.startswith("unsupported architecture OddForCausalLM (model_type 'odd'): could not find")
    assert "attention module in layer 0" in msg and "MLP module in layer 0" in msg
    assert "\n" not in msg


def test_no_layers_found():
    class NoLayers(_Odd):
        def __init__(self):
            super().__init__()
            self.model.layers = nn.Linear(2, 2)

    with pytest.raises(AnatomyError, match="could not find the decoder layers"):
        find_anatomy(NoLayers())


def test_anatomy_is_bound_to_the_model():
    model, _ = tiny_model("llama")
    a = find_anatomy(model)
    assert a.module(a.layer(0).o) is model.model.layers[0].self_attn.o_proj
    assert isinstance(a.module(a.embed), torch.nn.Embedding)
