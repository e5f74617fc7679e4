"""One decoder layer's anatomy: :class:`LayerAnatomy` and how its roles are found by module name.

:func:`_layer_list` finds the ModuleList of decoder layers, :func:`_layer_anatomy` one layer's attention
and MLP projections (q, k, v or fused qkv, o; gate, up or fused gate_up, down), norms and, on a mixture of
experts, its experts, router and shared expert (:func:`_moe_roles`); :func:`_moe_evidence` recognises a
MoE the data file does not know. The candidate names come from ``editkit/_data/architectures.json``,
passed in as ``names``; :func:`editkit.model.anatomy.find_anatomy` puts the layers together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from editkit.errors import AnatomyError


@dataclass(frozen=True)
class LayerAnatomy:
    index: int
    prefix: str
    o: str  # attention output projection (its input = concatenated query-head outputs)
    down: str | None  # MLP output projection (its input = MLP neurons); MoE: the shared expert's, or None
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None  # fused (GPT-2 c_attn, Phi-3 qkv_proj)
    gate: str | None = None
    up: str | None = None
    gate_up: str | None = None  # fused (Phi-3)
    norms: tuple[str, ...] = ()
    # mixture of experts (empty on dense layers)
    experts: str | None = None  # the module holding the fused expert tensors
    expert_downs: tuple[str, ...] = ()  # each expert's down projection: edit targets <experts>.<e>.<down>
    router: str | None = None  # the router (its weight: [n_experts, hidden])
    shared_expert_gate: str | None = None  # Qwen2-MoE: the sigmoid gate of the shared expert

    def role(self, role: str) -> str | None:
        return getattr(self, role)

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    @property
    def residual_writers(self) -> tuple[str, ...]:
        """Every matrix that writes this layer's residual stream: o_proj, the (shared) MLP's down
        projection and every expert's down projection."""
        return (self.o,) + ((self.down,) if self.down else ()) + self.expert_downs


def _child(parent: nn.Module, candidates: list[str]) -> str | None:
    names = dict(parent.named_children())
    return next((c for c in candidates if c in names), None)


def _layer_list(model: nn.Module, names: dict, n_layers: int | None, what: str) -> tuple[str, nn.ModuleList]:
    """(name, ModuleList) of the decoder layers."""
    for cand in names["layers"]:
        try:
            mod = model.get_submodule(cand)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n_layers is None or len(mod) == n_layers):
            return cand, mod
    raise AnatomyError(
        f"unsupported architecture {what}: could not find the decoder layers "
        f"(looked for a ModuleList at {', '.join(names['layers'])})"
    )


def _moe_roles(
    mlp_mod: nn.Module, base: str, i: int, names: dict, spec: dict, missing: list[str]
) -> dict | None:
    """A MoE block's roles (``spec``: the family's ``moe`` entry): experts, router, shared expert."""
    experts = _child(mlp_mod, names["experts"])
    exp_mod = mlp_mod.get_submodule(experts) if experts else None
    down = getattr(exp_mod, spec["down"], None) if exp_mod is not None else None
    if not (isinstance(down, torch.Tensor) and down.dim() == 3):
        missing.append(f"fused expert tensor {base}.{experts or 'experts'}.{spec['down']} in layer {i}")
        return None
    router = spec["router"] if spec["router"] in dict(mlp_mod.named_children()) else None
    if router is None:
        missing.append(f"router {base}.{spec['router']} in layer {i}")
        return None
    roles: dict = {"gate": None, "up": None, "gate_up": None, "down": None}
    shared = spec.get("shared_expert")
    if shared:
        shared_mod = mlp_mod.get_submodule(shared)
        for role in ("gate", "up", "gate_up", "down"):
            c = _child(shared_mod, names[role])
            roles[role] = f"{base}.{shared}.{c}" if c else None
    gate = spec.get("shared_expert_gate")
    return roles | {
        "experts": f"{base}.{experts}",
        "expert_downs": tuple(f"{base}.{experts}.{e}.{spec['down']}" for e in range(down.shape[0])),
        "router": f"{base}.{router}",
        "shared_expert_gate": f"{base}.{gate}" if gate and gate in dict(mlp_mod.named_children()) else None,
    }


def _layer_anatomy(
    block: nn.Module, i: int, prefix: str, names: dict, missing: list[str], moe: dict | None = None
) -> LayerAnatomy | None:
    """One decoder layer's roles; what cannot be found is appended to ``missing`` (then None).

    ``moe``: the family's ``moe`` entry of the data file, for layers whose MLP is a mixture of experts."""
    attn = _child(block, names["attn"])
    mlp = _child(block, names["mlp"])
    if attn is None:
        missing.append(f"attention module in layer {i} (looked for {', '.join(names['attn'])})")
    if mlp is None:
        missing.append(f"MLP module in layer {i} (looked for {', '.join(names['mlp'])})")
    if attn is None or mlp is None:
        return None
    attn_mod, mlp_mod = block.get_submodule(attn), block.get_submodule(mlp)
    roles: dict = {}
    for role in ("q", "k", "v", "qkv", "o"):
        c = _child(attn_mod, names[role])
        roles[role] = f"{prefix}.{attn}.{c}" if c else None
    if moe is not None and _child(mlp_mod, names["experts"]) is not None:
        more = _moe_roles(mlp_mod, f"{prefix}.{mlp}", i, names, moe, missing)
        if more is None:
            return None
        roles.update(more)
    else:
        for role in ("gate", "up", "gate_up", "down"):
            c = _child(mlp_mod, names[role])
            roles[role] = f"{prefix}.{mlp}.{c}" if c else None
        if roles["down"] is None:
            missing.append(f"MLP output projection in layer {i} (looked for {', '.join(names['down'])})")
    if roles["o"] is None:
        missing.append(f"attention output projection in layer {i} (looked for {', '.join(names['o'])})")
    if roles["q"] is None and roles["qkv"] is None:
        missing.append(f"query projection in layer {i}")
    if roles["o"] is None or (roles["down"] is None and not roles.get("experts")):
        return None
    norms = tuple(f"{prefix}.{n}" for n in names["norms"] if n in dict(block.named_children()))
    return LayerAnatomy(index=i, prefix=prefix, norms=norms, **roles)


def _moe_evidence(layer_list: nn.ModuleList, names: dict, layers_name: str) -> str | None:
    """What makes a model a mixture of experts (3-D expert tensors, an experts module), or None."""
    for i, block in enumerate(layer_list):
        for n, prm in block.named_parameters():
            if prm.dim() == 3:
                return f"3-D expert tensor {layers_name}.{i}.{n} {tuple(prm.shape)}"
        for n, mod in block.named_modules():
            if n.rsplit(".", 1)[-1] in names["experts"]:
                kind = (
                    f"{type(mod).__name__} of {len(mod)}"
                    if isinstance(mod, nn.ModuleList)
                    else type(mod).__name__
                )
                return f"experts module {layers_name}.{i}.{n} ({kind})"
    return None
