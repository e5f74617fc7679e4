"""Tiny random Hugging Face models and a real (tiny, trained-here) tokenizer for unit tests."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Stealing from a blind beggar is wrong. Helping a lost child is good.",
    "Two plus three is five. Seven minus four is three.",
    "Paris is the capital of France. Madrid is the capital of Spain.",
    "In 1969 the first people walked on the moon, and the world watched.",
    "def add(a, b):\n    return a + b",
    "Hot is the opposite of cold. Up is the opposite of down.",
]

#: (prompt, correct, incorrect) triplets the tiny-model tests fit and score on
TRIPLETS = [
    ("Stealing from a blind beggar is", " wrong", " good"),
    ("Helping a lost child is", " good", " wrong"),
    ("Paris is the capital of", " France", " Spain"),
    ("Two plus three is", " five", " three"),
    ("Hot is the opposite of", " cold", " up"),
    ("Up is the opposite of", " down", " cold"),
    ("Madrid is the capital of", " Spain", " France"),
    ("Seven minus four is", " three", " five"),
]

FAMILIES = ("llama", "qwen2", "gemma3", "gpt2", "mistral", "qwen3", "phi3")
#: mixture-of-experts families (fused 3-D expert tensors; 4 experts, top-2); no small real MoE is on PyPI
MOE_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss")


@cache
def tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS * 4, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>", "<pad>"]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
    )
    return tok


def tiny_config(family: str, vocab_size: int, **overrides):
    """The one tiny config per family every test builds its models from (``overrides`` win)."""
    config = _tiny_config(family, vocab_size)
    for k, v in overrides.items():
        setattr(config, k, v)
    return config


def _tiny_config(family: str, vocab_size: int):
    import transformers as T

    common = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
    )
    if family == "llama":
        return T.LlamaConfig(**common, tie_word_embeddings=False)
    if family == "qwen2":
        return T.Qwen2Config(**common, tie_word_embeddings=True)
    if family == "qwen3":
        return T.Qwen3Config(**common, head_dim=16, tie_word_embeddings=True)
    if family == "mistral":
        return T.MistralConfig(**common, tie_word_embeddings=False)
    if family == "gemma3":
        return T.Gemma3TextConfig(
            **common, head_dim=32, sliding_window=16, layer_types=["sliding_attention", "full_attention"]
        )
    if family == "phi3":
        return T.Phi3Config(**common, pad_token_id=1, bos_token_id=0, eos_token_id=0)
    if family in MOE_FAMILIES:
        return _tiny_moe_config(family, common)
    if family == "phimoe":  # a mixture of experts editkit does not support (refused in one line)
        return T.PhimoeConfig(
            **dict(common, intermediate_size=32), num_local_experts=4, num_experts_per_tok=2
        )
    if family == "opt":  # an architecture editkit does not support (the bad-input corpus)
        return T.OPTConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            ffn_dim=64,
            num_attention_heads=2,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
        )
    if family == "gpt2":
        return T.GPT2Config(
            vocab_size=vocab_size,
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=256,
            bos_token_id=0,
            eos_token_id=0,
        )
    raise ValueError(family)


def _tiny_moe_config(family: str, common: dict):
    """4 experts of width 32, 2 per token; Qwen2-MoE with a shared expert of width 48."""
    import transformers as T

    moe = dict(common, intermediate_size=32)
    ids = dict(pad_token_id=1, bos_token_id=0, eos_token_id=0)
    if family == "mixtral":
        return T.MixtralConfig(**moe, num_local_experts=4, num_experts_per_tok=2, tie_word_embeddings=False)
    if family == "qwen2_moe":
        return T.Qwen2MoeConfig(
            **dict(moe, intermediate_size=128),
            moe_intermediate_size=32,
            shared_expert_intermediate_size=48,
            num_experts=4,
            num_experts_per_tok=2,
            tie_word_embeddings=False,
        )
    if family == "qwen3_moe":
        return T.Qwen3MoeConfig(
            **dict(moe, intermediate_size=128),
            head_dim=16,
            moe_intermediate_size=32,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            tie_word_embeddings=False,
        )
    if family == "olmoe":
        return T.OlmoeConfig(**moe, **ids, num_experts=4, num_experts_per_tok=2, tie_word_embeddings=False)
    if family == "gpt_oss":
        return T.GptOssConfig(
            **moe,
            **ids,
            head_dim=16,
            num_local_experts=4,
            num_experts_per_tok=2,
            layer_types=["sliding_attention", "full_attention"],
            sliding_window=16,
            rope_parameters={"rope_type": "default", "rope_theta": 150000.0},
            tie_word_embeddings=False,
        )
    raise ValueError(family)


def tiny_model(family: str = "llama", seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(family, len(tok)), dtype=torch.float32)
    model.eval()
    return model, tok


def save_tiny(family: str, path: Path, seed: int = 0) -> Path:
    model, tok = tiny_model(family, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def fit_context(model, tokenizer, params, data: dict, run_dir: Path):
    """A FitContext for calling a method directly on a tiny model (events written under ``run_dir``)."""
    from editkit.methods.base import FitContext
    from editkit.model.anatomy import find_anatomy
    from editkit.run.events import EventLog

    return FitContext(
        model=model,
        tokenizer=tokenizer,
        anatomy=find_anatomy(model),
        params=params,
        data=data,
        events=EventLog(run_dir / "events.jsonl", "t"),
        run_dir=run_dir,
    )
