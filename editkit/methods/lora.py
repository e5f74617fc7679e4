"""LoRA building blocks shared by the methods that fit an adapter (scalpel, sft).

Target resolution (fused qkv / gate_up projections stand in for their parts), the PEFT wrap with a seeded
initialisation, the read-out of the adapter as ``LowRank`` ops, the unwrap that gives back the untouched
base model, and the random-LoRA control of the same size.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Literal

import torch

from editkit.edit import Edit
from editkit.ops import LowRank

Role = Literal["q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down"]
ADAPTER = "default"
# Fused projections stand in for their parts on models that have them (GPT-2 c_attn, Phi-3 qkv/gate_up).
_FUSED = {"q": "qkv", "k": "qkv", "v": "qkv", "gate": "gate_up", "up": "gate_up"}


def resolve_targets(anatomy, roles: list[str], layers: Literal["all"] | list[int]) -> list[str]:
    """Full module names for the roles on the chosen layers; fused projections replace missing parts."""
    chosen = None if layers == "all" else set(layers)
    out: list[str] = []
    for layer in anatomy.layers:
        if chosen is not None and layer.index not in chosen:
            continue
        for role in roles:
            name = layer.role(role) or (layer.role(_FUSED[role]) if role in _FUSED else None)
            if name is not None and name not in out:
                out.append(name)
    return out


def module_map(anatomy) -> dict[str, tuple[int, str]]:
    """module name -> (layer index, role)."""
    out = {}
    for layer in anatomy.layers:
        for role in ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down"):
            name = layer.role(role)
            if name:
                out[name] = (layer.index, role)
    return out


def lora_layers(model, names: list[str]) -> list[tuple[str, torch.nn.Module]]:
    """(name, PEFT LoRA layer) for each target, looked up on the wrapped base model by its plain name."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return [(n, inner.get_submodule(n)) for n in names]


def wrap_lora(model, names: list[str], p, seed: int):
    """PEFT-wrap ``model`` in place with a fresh adapter (seeded init); returns (peft_model, saved flags).

    ``p``: the method's params (``rank``, ``alpha``, optional ``dropout``). The global RNG is left as it was."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    flags = {n: prm.requires_grad for n, prm in model.named_parameters()}
    fan_in_fan_out = any(isinstance(model.get_submodule(n), Conv1D) for n in names)
    config = LoraConfig(
        r=p.rank,
        lora_alpha=p.alpha,
        lora_dropout=getattr(p, "dropout", 0.0),
        target_modules=names,
        bias="none",
        fan_in_fan_out=fan_in_fan_out,
        init_lora_weights=True,
    )
    devices = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    cpu = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():
            # PEFT reads transformers' deprecated `is_gradient_checkpointing` alias on every wrap: one
            # FutureWarning per `editkit apply` that a user can do nothing about
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
            peft_model = get_peft_model(model, config)
    finally:
        torch.set_rng_state(cpu)
        if devices is not None:
            torch.cuda.set_rng_state_all(devices)
    return peft_model, flags


def adapter_ops(peft_model, names: list[str]) -> list[LowRank]:
    """One LowRank op per adapted module: ΔW = scale·B·A with plain (un-prefixed) module names."""
    ops = []
    for name, layer in lora_layers(peft_model, names):
        ops.append(
            LowRank(
                module=name,
                A=layer.lora_A[ADAPTER].weight.detach().to(torch.float32).cpu().clone(),
                B=layer.lora_B[ADAPTER].weight.detach().to(torch.float32).cpu().clone(),
                scale=float(layer.scaling[ADAPTER]),
            )
        )
    return ops


def unwrap_lora(peft_model, flags: dict[str, bool]):
    """Remove every LoRA layer without merging; the base model object comes back unchanged."""
    base = peft_model.unload()
    for n, prm in base.named_parameters():
        prm.requires_grad_(flags.get(n, prm.requires_grad))
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in base.__dict__:
            delattr(base, attr)
    return base


def random_lora_like(edit: Edit, salt: str) -> Edit:
    """A random LoRA of the same rank with the same ‖scale·B·A‖_F per module as ``edit`` (the control).

    Seeded from ``salt`` (e.g. ``"{seed}:scalpel-control"``), so a run's control is reproducible."""
    gen = torch.Generator().manual_seed(int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16))
    ops = []
    for op in edit.ops:
        if not isinstance(op, LowRank):
            continue
        target = float((op.scale * op.B.float() @ op.A.float()).norm())
        a = torch.randn(op.A.shape, generator=gen)
        b = torch.randn(op.B.shape, generator=gen)
        cur = float((op.scale * b @ a).norm())
        f = math.sqrt(target / cur) if cur > 0 else 0.0
        ops.append(
            LowRank(module=op.module, A=(a * f).to(op.A.dtype), B=(b * f).to(op.B.dtype), scale=op.scale)
        )
    return Edit(method=edit.method, ops=ops, info={"control": "random LoRA, same rank and per-module ‖ΔW‖_F"})
