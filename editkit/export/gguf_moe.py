"""GGUF for mixture-of-experts exports: each layer's per-expert tensors stacked into llama.cpp's
``ffn_{gate,up,down}_exps`` (the router is ``ffn_gate_inp``, a shared expert ``ffn_*_shexp``).

Written where the ``gguf`` library knows the family's expert layout (``moe.<family>.gguf`` in
``_data/architectures.json`` names the GGUF architecture, whose tensor list must hold ``ffn_down_exps``) and
transformers can load the file back for the round-trip check (``editkit.export.gguf_file.check_gguf``): Qwen2-MoE
and Qwen3-MoE. Any other MoE is refused in one line saying which of the two is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from editkit.errors import EditkitError
from editkit.model.targets import moe_spec

#: one expert's tensor in the per-expert checkpoint format save_pretrained writes
EXPERT_KEY = re.compile(r"(?P<pre>.*\.experts)\.(?P<e>\d+)\.(?P<proj>\w+)\.weight$")


def moe_gguf_arch(config, field: str = "export.gguf") -> str | None:
    """The GGUF architecture of a MoE config, None for a dense one; one EditkitError when editkit cannot write
    (or could not check) a GGUF of this family."""
    mt = getattr(config, "model_type", None)
    spec = moe_spec(mt)
    if spec is None:
        return None
    arch = spec.get("gguf")
    if arch is None:
        raise EditkitError(
            f"{field}: editkit's GGUF writer has no mapping for '{mt}' mixture-of-experts models (expert "
            "biases, attention sinks); drop export.gguf, or convert the safetensors export with llama.cpp"
        )
    import gguf
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    enum = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    if enum is None or gguf.MODEL_TENSOR.FFN_DOWN_EXP not in gguf.MODEL_TENSORS.get(enum, []):
        raise EditkitError(
            f"{field}: the gguf library {gguf.__version__} has no ffn_*_exps layout for '{arch}'"
        )
    if mt not in GGUF_CONFIG_MAPPING:
        import transformers

        raise EditkitError(
            f"{field}: the gguf library names '{mt}' experts ({arch} ffn_*_exps), but transformers "
            f"{transformers.__version__} cannot load such a GGUF back, so editkit could not check the file; "
            "drop export.gguf, or convert the safetensors export with llama.cpp's converter"
        )
    default = type(config)()
    for key in ("moe_intermediate_size", "shared_expert_intermediate_size"):
        mine, theirs = getattr(config, key, None), getattr(default, key, None)
        if mine is not None and mine != theirs:
            raise EditkitError(
                f"{field}: {key} is {mine}; transformers reads no expert width from a GGUF (it assumes "
                f"{theirs}), so editkit could not check the file; convert the safetensors export with llama.cpp"
            )
    return arch


def add_moe_keys(writer, config) -> None:
    """Expert count, experts per token and expert widths (no-op for dense models)."""
    if moe_spec(getattr(config, "model_type", None)) is None:
        return
    n = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    writer.add_expert_count(int(n))
    writer.add_expert_used_count(int(config.num_experts_per_tok))
    if getattr(config, "moe_intermediate_size", None):
        writer.add_expert_feed_forward_length(int(config.moe_intermediate_size))
    if getattr(config, "shared_expert_intermediate_size", None):
        writer.add_expert_shared_feed_forward_length(int(config.shared_expert_intermediate_size))


def moe_tensors(folder: Path, config, arch: str):
    """``gguf_export._tensors`` for a MoE folder: (gguf name, file, key, shape, None) in file order, where
    the experts of one layer and projection are one entry whose ``key`` is the tuple of (file, key) of
    experts 0..E-1 (stacked when written)."""
    import gguf
    from safetensors import safe_open

    enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(enum, config.num_hidden_layers)
    out: list = []
    groups: dict[str, list] = {}  # stacked name -> [(e, file, key, shape)]
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = tuple(st.get_slice(key).get_shape())
                m = EXPERT_KEY.fullmatch(key)
                hf = f"{m['pre']}.{m['proj']}.weight" if m else key
                new = names.get_name(hf, try_suffixes=(".weight", ".bias"))
                if new is None:
                    raise EditkitError(f"export.gguf: {f.name}: tensor {key} has no GGUF name for {arch}")
                if m is None and new.endswith("_inp_shexp.weight") and shape[0] == 1:
                    out.append((new, f, Squeezed(key), shape[1:], None))  # llama.cpp: one gate vector
                    continue
                if m is None:
                    if len(shape) == 3:
                        raise EditkitError(
                            f"export.gguf: {f.name}: fused expert tensor {key}; editkit writes GGUF from the "
                            "per-expert format save_pretrained writes"
                        )
                    out.append((new, f, key, shape, None))
                    continue
                if new not in groups:
                    groups[new] = []
                    out.append(new)  # placeholder, filled in below
                groups[new].append((int(m["e"]), f, key, shape))
    plan = []
    for item in out:
        if not isinstance(item, str):
            plan.append(item)
            continue
        experts = sorted(groups[item], key=lambda g: g[0])
        if [g[0] for g in experts] != list(range(len(experts))) or len({g[3] for g in experts}) != 1:
            raise EditkitError(f"export.gguf: the experts of {item} are incomplete or of different shapes")
        keys = tuple((g[1], g[2]) for g in experts)
        plan.append((item, experts[0][1], keys, (len(experts), *experts[0][3]), None))
    return plan


class Squeezed(str):
    """A checkpoint key whose tensor is written without its leading axis of 1."""


def read_planned(f: Path, key) -> np.ndarray:
    """One planned tensor as fp32 numpy: a checkpoint tensor, or experts stacked along a new first axis."""
    from safetensors import safe_open

    if isinstance(key, tuple):
        return np.stack([read_planned(kf, k) for kf, k in key])
    if isinstance(key, Squeezed):
        return read_planned(f, str(key))[0]
    with safe_open(str(f), "pt") as st:
        return st.get_tensor(key).float().numpy()
