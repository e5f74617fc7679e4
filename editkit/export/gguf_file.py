"""GGUF export: the exported safetensors folder as one ``model.gguf`` for llama.cpp, Ollama and LM Studio.

Everything format-specific comes from the ``gguf`` library (the package llama.cpp's converter is built on):
``GGUFWriter`` writes the file, ``get_tensor_name_map`` names the tensors, ``quants.quantize`` makes BF16 and
Q8_0 blocks, ``SpecialVocab`` carries merges, special token ids and the chat template. What is ours: which
config field becomes which key, the llama q/k row order, and which tensors stay F32 (1-D ones, as llama.cpp
does). Tensors are converted and written one at a time (peak memory ≈ the largest tensor).

``check_gguf`` loads the file back with transformers (``gguf_file=``) and compares logits and token ids
with the safetensors folder it came from.

The K-quants users download (``q4_k_m``, ``q5_k_m``, ``q6_k``) are made by llama.cpp's own quantiser from the
f16 file written here (``editkit.export.llamacpp``, the optional ``editkit[llamacpp]`` extra). ``export.gguf`` may
name several types: one type is ``model.gguf``, several are ``model-<type>.gguf`` each (:func:`write_ggufs`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editkit.errors import EditkitError
from editkit.export.gguf_moe import add_moe_keys, moe_gguf_arch, moe_tensors, read_planned
from editkit.export.llamacpp import LLAMA_CPP_TYPES, quantize, require_llama_cpp

GGUF_TYPES = ("f16", "bf16", "q8_0")  # written here, with the gguf library
#: every type ``export.gguf`` takes: the gguf library's, then llama.cpp's K-quants (editkit.export.llamacpp)
ALL_GGUF_TYPES = (*GGUF_TYPES, *LLAMA_CPP_TYPES)

#: HF model_type → (GGUF architecture, q/k rows permuted the llama.cpp way)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("llama", True),
    "mistral": ("llama", True),  # llama.cpp runs Mistral as llama
    "qwen2": ("qwen2", False),
    # mixture of experts: per-expert tensors stacked into ffn_*_exps (editkit.export.gguf_moe)
    "qwen2_moe": ("qwen2moe", False),
    "qwen3_moe": ("qwen3moe", False),
}

#: the round-trip bound: max |Δlogit| of the GGUF (loaded back with transformers) vs the safetensors export,
#: relative to the largest |logit|; f16/bf16 only round the weights, q8_0 quantises them in blocks of 32; the
#: K-quants (llama.cpp's) 4-6 bits in blocks of 256, with 32-block types where rows are shorter (measured on
#: the demo edit: q6_k 6.7 %, q4_k_m 19.6 %, q5_k_m 32.8 % — its 166 fallback Q5_1 tensors; in llama.cpp the
#: qwen-coder-1.5b Q4_K_M reached 59 %: a 4-bit file's largest logit error is loose, BENCHMARKS.md)
ROUND_TRIP_BOUND = {"f16": 0.01, "bf16": 0.05, "q8_0": 0.05, "q6_k": 0.3, "q5_k_m": 0.75, "q4_k_m": 0.75}

PROBE_TEXTS = [
    "The quick brown fox jumps over the lazy dog because",
    "In 1969 the first people walked on the moon, and",
    "def add(a, b):\n    return",
]


def _config_value(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _rope(config) -> tuple[float, str]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if isinstance(params, dict) and "full_attention" in params:  # per-layer-type rope (gemma3-style)
        params = params["full_attention"]
    theta = (params.get("rope_theta") if isinstance(params, dict) else None) or getattr(
        config, "rope_theta", None
    )
    kind = (
        (params.get("rope_type") or params.get("type") or "default")
        if isinstance(params, dict)
        else "default"
    )
    return float(theta or 10000.0), str(kind)


def check_gguf_supported(config, tokenizer=None, field: str = "export.gguf") -> str:
    """The GGUF architecture for ``config`` (and tokenizer), or one EditkitError saying why not. No weights
    are needed: the pipeline calls this right after loading, before any fitting."""
    mt = getattr(config, "model_type", None)
    moe_gguf_arch(config, field)  # a MoE family editkit cannot write (or check): one line naming why
    if mt not in ARCHITECTURES:
        raise EditkitError(
            f"{field}: GGUF export supports {', '.join(sorted(ARCHITECTURES))} models; this one is "
            f"'{mt}' (drop export.gguf, or convert the safetensors export with llama.cpp's converter)"
        )
    arch = ARCHITECTURES[mt][0]
    _, kind = _rope(config)
    if kind != "default":
        raise EditkitError(f"{field}: rope scaling '{kind}' is not supported by editkit's GGUF export")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        if arch == "llama":
            raise EditkitError(f"{field}: a llama model with attention/MLP biases cannot be exported to GGUF")
    heads = config.num_attention_heads
    head_dim = _config_value(config, "head_dim", default=config.hidden_size // heads)
    if arch == "qwen2" and head_dim * heads != config.hidden_size:
        raise EditkitError(f"{field}: a qwen2 model with head_dim * heads != hidden_size cannot be exported")
    if tokenizer is not None:
        _tokenizer_model(tokenizer, field)
    return arch


# ------------------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------------------


def _tokenizer_json(tokenizer) -> dict:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise EditkitError("export.gguf: needs a fast (tokenizer.json) tokenizer")
    return json.loads(backend.to_str())


def _pre_tokenizer_name(tj: dict, field: str) -> str:
    """The GGUF ``tokenizer.ggml.pre`` name whose split rule is this tokenizer's (transformers' own table)."""
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return "gpt-2"
    parts = pre.get("pretokenizers") or []
    if (
        pre.get("type") == "Sequence"
        and len(parts) == 2
        and parts[0].get("type") == "Split"
        and parts[1].get("type") == "ByteLevel"
        and not parts[1].get("use_regex", True)
    ):
        regex = (parts[0].get("pattern") or {}).get("Regex")
        try:
            from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
        except ImportError:  # pragma: no cover - older transformers
            GGUF_PRE_TOKENIZER_SPLITS = {}
        preferred = ("qwen2", "llama-bpe")
        names = sorted(
            (n for n, r in GGUF_PRE_TOKENIZER_SPLITS.items() if r == regex), key=preferred.__contains__
        )
        if names:
            return names[-1]
    raise EditkitError(
        f"{field}: the tokenizer's pre-tokenizer ({pre.get('type')}) matches no GGUF pre-tokenizer that "
        "transformers and llama.cpp both know; the GGUF would tokenize differently"
    )


def _tokenizer_model(tokenizer, field: str = "export.gguf") -> tuple[str, str]:
    tj = _tokenizer_json(tokenizer)
    model, decoder = tj.get("model") or {}, tj.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise EditkitError(
            f"{field}: only byte-level BPE (GPT-2 style) tokenizers are supported; this one is "
            f"{model.get('type')}{' with byte fallback' if model.get('byte_fallback') else ''}"
        )
    return "gpt2", _pre_tokenizer_name(tj, field)


def _add_tokenizer(writer, folder: Path, tokenizer, vocab_size: int) -> None:
    import gguf

    tok_model, pre = _tokenizer_model(tokenizer)
    writer.add_tokenizer_model(tok_model)
    writer.add_tokenizer_pre(pre)
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:  # the embedding is larger than the vocabulary
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    if len(by_id) > vocab_size:
        raise EditkitError(f"export.gguf: the tokenizer has {len(by_id)} tokens, the model only {vocab_size}")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


# ------------------------------------------------------------------------------------------------------
# tensors
# ------------------------------------------------------------------------------------------------------


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary half-split rows → llama.cpp's interleaved pairs (the inverse transformers undoes on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qtype(name: str, shape: tuple[int, ...], kind: str):
    import gguf

    Q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return Q.F32
    if kind == "bf16":
        return Q.BF16
    if kind == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16


def _convert(data: np.ndarray, qtype) -> np.ndarray:
    import gguf

    Q = gguf.GGMLQuantizationType
    if qtype == Q.F32:
        return data.astype(np.float32, copy=False)
    if qtype == Q.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data.astype(np.float32, copy=False), qtype)


def _nbytes(shape: tuple[int, ...], qtype) -> int:
    import gguf

    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape)) if shape else 1
    return n // block * type_size


def _tensors(folder: Path, config, arch: str, permute: bool):
    """(gguf name, safetensors file, key, shape, permute-heads) in file order; every tensor must map."""
    import gguf
    from safetensors import safe_open

    if moe_gguf_arch(config) is not None:
        return moe_tensors(folder, config, arch)
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)
    heads, kv = config.num_attention_heads, config.num_key_value_heads
    out = []
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                new = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if new is None:
                    raise EditkitError(f"export.gguf: {f.name}: tensor {key} has no GGUF name for {arch}")
                shape = tuple(st.get_slice(key).get_shape())
                n_rot = heads if ".q_proj." in key else kv if ".k_proj." in key else None
                out.append((new, f, key, shape, n_rot if permute else None))
    return out


def write_gguf(folder: str | Path, dest: str | Path | None = None, kind: str = "f16") -> dict[str, Any]:
    """Write ``folder`` (a safetensors model folder with config and tokenizer) as a GGUF file of type
    ``kind`` (f16 | bf16 | q8_0), by default ``folder/model.gguf``. Returns path, bytes, seconds."""
    import gguf
    from transformers import AutoConfig, AutoTokenizer

    if kind not in GGUF_TYPES:
        raise EditkitError(f"export.gguf: unknown type {kind!r} (one of {', '.join(GGUF_TYPES)})")
    t0 = time.time()
    folder = Path(folder)
    dest = Path(dest) if dest is not None else folder / "model.gguf"
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    arch = check_gguf_supported(config, tokenizer)
    permute = ARCHITECTURES[config.model_type][1]
    heads = config.num_attention_heads
    head_dim = _config_value(config, "head_dim", default=config.hidden_size // heads)
    theta, _ = _rope(config)
    ftype = {
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[kind]

    writer = gguf.GGUFWriter(dest, arch)
    name = str(getattr(config, "_name_or_path", "") or folder.name)
    writer.add_name(("mistral " if config.model_type == "mistral" else "") + Path(name).name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    add_moe_keys(writer, config)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(theta)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
    else:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, folder, tokenizer, config.vocab_size)

    plan = _tensors(folder, config, arch, permute)
    qtypes = [_qtype(new, shape, kind) for new, _, _, shape, _ in plan]
    for (new, _, _, shape, _), q in zip(plan, qtypes, strict=True):
        writer.add_tensor_info(new, shape, np.dtype(np.float32), _nbytes(shape, q), raw_dtype=q)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for (_, f, key, _, n_rot), q in zip(plan, qtypes, strict=True):
        data = read_planned(f, key)  # a tensor, or a layer's experts stacked (ffn_*_exps)
        if n_rot is not None:
            data = _permute_qk(data, n_rot)
        writer.write_tensor_data(_convert(data, q))
        del data
    writer.close()
    return {
        "file": dest.name,
        "type": kind,
        "bytes": dest.stat().st_size,
        "seconds": round(time.time() - t0, 2),
    }


def gguf_kinds(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``export.gguf`` (one type, a list of types or none) as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def gguf_file_name(kind: str, kinds: list[str]) -> str:
    """One type: ``model.gguf``; several: ``model-<type>.gguf`` (the type in the name, as Hub users expect)."""
    return "model.gguf" if len(kinds) == 1 else f"model-{kind}.gguf"


def check_gguf_kinds(value, field: str = "export.gguf") -> list[str]:
    """The types as a list, or one EditkitError line: an unknown type, or a K-quant without llama.cpp's
    bindings installed (checked before any model loads)."""
    kinds = gguf_kinds(value)
    for kind in kinds:
        if kind not in ALL_GGUF_TYPES:
            raise EditkitError(f"{field}: unknown type {kind!r} (one of {', '.join(ALL_GGUF_TYPES)})")
    if len(set(kinds)) != len(kinds):
        raise EditkitError(f"{field}: a type is named twice ({', '.join(kinds)})")
    for kind in kinds:
        require_llama_cpp(field, kind)
    return kinds


def write_ggufs(folder: str | Path, value) -> list[dict[str, Any]]:
    """Every GGUF file ``export.gguf`` names, in ``folder`` (the export's temporary folder). The K-quants
    are made by llama.cpp from the f16 file: the one asked for, or a temporary one deleted afterwards."""
    folder = Path(folder)
    kinds = check_gguf_kinds(value)
    quants = [k for k in kinds if k not in GGUF_TYPES]
    out: dict[str, dict[str, Any]] = {}
    for kind in (k for k in kinds if k in GGUF_TYPES):
        out[kind] = write_gguf(folder, folder / gguf_file_name(kind, kinds), kind)
    if quants:
        f16 = folder / (gguf_file_name("f16", kinds) if "f16" in kinds else ".model-f16.gguf.part")
        f16_seconds = out["f16"]["seconds"] if "f16" in out else write_gguf(folder, f16, "f16")["seconds"]
        try:
            for kind in quants:
                out[kind] = quantize(f16, folder / gguf_file_name(kind, kinds), kind)
                out[kind]["f16_seconds"] = f16_seconds  # the f16 file it was made from took this long
        finally:
            if "f16" not in kinds:
                f16.unlink(missing_ok=True)
    return [out[k] for k in kinds]


def check_ggufs(folder: str | Path, infos: list[dict[str, Any]]) -> None:
    """:func:`check_gguf` on every file :func:`write_ggufs` wrote; adds each one's result to its info."""
    for info in infos:
        info.update(check_gguf(folder, info["file"], info["type"]))


# ------------------------------------------------------------------------------------------------------
# the round trip
# ------------------------------------------------------------------------------------------------------


def check_gguf(folder: str | Path, gguf_name: str = "model.gguf", kind: str | None = None) -> dict[str, Any]:
    """Load ``folder/gguf_name`` back with transformers and compare it with the safetensors in ``folder``:
    logits on fixed prompts (max |Δ| within ``ROUND_TRIP_BOUND[kind]`` × max |logit|) and token ids on the
    probe texts and on a chat-templated prompt (identical). Raises EditkitError when either fails."""

    folder = Path(folder)
    # alone in a folder, as llama.cpp users get it (beside tokenizer files, transformers mixes the two)
    with tempfile.TemporaryDirectory(prefix=".gguf-check-", dir=folder.parent) as alone:
        try:
            os.link(folder / gguf_name, Path(alone) / gguf_name)
        except OSError:
            shutil.copy2(folder / gguf_name, Path(alone) / gguf_name)
        return _compare(folder, Path(alone), gguf_name, kind)


@torch.no_grad()
def _compare(folder: Path, alone: Path, gguf_name: str, kind: str | None) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    gtok = AutoTokenizer.from_pretrained(alone, gguf_file=gguf_name)
    texts = list(PROBE_TEXTS)
    if getattr(tok, "chat_template", None):
        msgs = [{"role": "user", "content": "Name three colours of the rainbow."}]
        chat = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if chat != gtok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True):
            raise EditkitError(f"GGUF check failed: {gguf_name} renders the chat template differently")
        texts.append(chat)
    for text in texts:
        a, b = tok(text)["input_ids"], gtok(text)["input_ids"]
        if a != b:
            raise EditkitError(f"GGUF check failed: {gguf_name} tokenizes {text[:40]!r} differently")
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval()
    got = AutoModelForCausalLM.from_pretrained(alone, gguf_file=gguf_name, dtype=torch.float32).eval()
    worst, scale = 0.0, 0.0
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]])
        x, y = ref(ids).logits, got(ids).logits
        worst = max(worst, float((x - y).abs().max()))
        scale = max(scale, float(x.abs().max()))
    del ref, got
    info = {"max_abs_logit_diff": worst, "max_abs_logit": scale, "tokens_identical": True}
    if kind is not None:
        info["bound"] = ROUND_TRIP_BOUND[kind] * scale
        if worst > info["bound"]:
            raise EditkitError(
                f"GGUF check failed: {gguf_name} ({kind}) differs from the safetensors export by "
                f"{worst:.3g} > {info['bound']:.3g} ({ROUND_TRIP_BOUND[kind]} × max |logit|)"
            )
    return info
