"""LoRA building blocks shared by the methods that fit an adapter (scalpel, sft).

Target resolution (fused qkv / gate_up projections stand in for their parts), the PEFT wrap with a seeded
initialisation, LoRA dropout drawn from the fit's own generator, the read-out of the adapter as ``LowRank``
ops, the unwrap that gives back the untouched base model, and the random-LoRA control of the same size.

Mixture of experts: ``router`` (the router's weight) and ``experts`` (every expert's down projection, one
fused 3-D tensor) are adapted through PEFT's ``target_parameters`` (``ParamWrapper``; no LoRA dropout there)
and read back as one ``LowRank`` per router and per expert. The experts' fused gate/up tensors get no
adapter (editkit edits only each expert's down projection); ``gate``/``up``/``down`` on a MoE layer are its
shared expert's, where it has one.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Literal

import torch

from editkit.edit.edit import Edit
from editkit.edit.ops import LowRank
from editkit.errors import EditkitError
from editkit.model.targets import expert_layout

Role = Literal["q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down", "router", "experts"]
#: roles adapted through PEFT's target_parameters (a parameter, not a Linear module)
PARAM_ROLES = ("router", "experts")
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
    """module name -> (layer index, role); each expert's down projection maps to role ``experts``."""
    out = {}
    for layer in anatomy.layers:
        for role in ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down", "router", "experts"):
            name = layer.role(role)
            if name:
                out[name] = (layer.index, role)
        for name in layer.expert_downs:
            out[name] = (layer.index, "experts")
    return out


def lora_notes(anatomy, roles: list[str]) -> list[str]:
    """One line for a MoE model whose experts the roles leave out or reach only in part (shown at check)."""
    if not anatomy.is_moe:
        return []
    import peft

    asked = [r for r in roles if r in ("gate", "up", "gate_up", "down")]
    shared = any(la.down for la in anatomy.layers if la.is_moe)
    if "experts" in roles and not asked:
        return []
    return [
        f"method.targets: on {anatomy.architecture} the experts are fused 3-D tensors; PEFT {peft.__version__} "
        "adapts them (target_parameters) and editkit reads back each expert's down projection: add 'experts' "
        "(and 'router') to targets for them; the experts' gate/up tensors get no adapter"
        + (", and gate/up/down mean the shared expert" if shared else "")
    ]


def check_param_roles(anatomy, roles: list[str], dropout: float) -> None:
    """Roles adapted as parameters (router, experts) exist only on a MoE and take no LoRA dropout."""
    asked = [r for r in roles if r in PARAM_ROLES]
    if not asked:
        return
    if not anatomy.is_moe:
        raise EditkitError(
            f"method.targets: {asked[0]} names a mixture-of-experts part; {anatomy.architecture} has no experts"
        )
    if dropout:
        raise EditkitError(
            f"method.dropout: {dropout}: PEFT's LoRA on {'/'.join(asked)} (target_parameters) takes no dropout; "
            "set dropout: 0"
        )


def param_targets(model, names: list[str]) -> dict[str, str]:
    """Module name -> the parameter PEFT adapts there (routers: weight; experts: the fused down projection)."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    layout = expert_layout(getattr(model.config, "model_type", None))
    out = {}
    for n in names:
        mod = model.get_submodule(n)
        if isinstance(mod, (nn.Linear, Conv1D, nn.Embedding)):
            continue
        fused = getattr(mod, layout.down, None) if layout is not None else None
        out[n] = layout.down if isinstance(fused, torch.Tensor) and fused.dim() == 3 else "weight"
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
    params = param_targets(model, names)
    config = LoraConfig(
        r=p.rank,
        lora_alpha=p.alpha,
        lora_dropout=getattr(p, "dropout", 0.0),
        target_modules=[n for n in names if n not in params],
        target_parameters=[f"{n}.{attr}" for n, attr in params.items()] or None,
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


class DropoutMasks:
    """The generator every LoRA dropout layer of one fit draws from, and whether dropout is on.

    ``reseed(step, micro)`` before a micro-batch's forward pass turns it on: the masks are then a function of
    the salt, the step, the micro-batch and the order the layers run in, and of nothing else. Not of torch's
    global RNG, which anything else in the process may draw from (so a fit checkpointed and resumed, or run
    after other work, draws exactly the masks of an uninterrupted one). On/off is this object's, not the
    modules' train/eval mode: PEFT >= 0.22 sets every adapter module's mode from its LoRA layer's whenever an
    adapter is enabled again (after ``disable_adapter()``, as the KL-to-base term does), which turned a fit's
    dropout off after its first KL pass while the base model stayed in eval mode."""

    def __init__(self, salt: str):
        self.salt = salt
        self.on = False
        self._seed: int | None = None
        self._generators: dict[torch.device, torch.Generator] = {}

    def reseed(self, step: int, micro: int) -> None:
        digest = hashlib.sha256(f"{self.salt}:{step}:{micro}".encode()).hexdigest()
        self._seed = int(digest[:16], 16)
        self._generators.clear()
        self.on = True

    def generator(self, device: torch.device) -> torch.Generator:
        if self._seed is None:
            raise EditkitError("internal: LoRA dropout drew a mask before DropoutMasks.reseed(step, micro)")
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    def around(self, batches, validate):
        """train_lora's ``batches(step, micro)``, reseeding before each micro-batch it hands out, and its
        ``validate(step)``, run with dropout off."""

        def batch(step: int, micro: int):
            self.reseed(step, micro)
            return batches(step, micro)

        def validate_off(step: int) -> dict:
            was, self.on = self.on, False
            try:
                return validate(step)
            finally:
                self.on = was

        return batch, validate_off


class StepDropout(torch.nn.Module):
    """Inverted dropout (as ``torch.nn.Dropout``) with its masks from a ``DropoutMasks``, while it is on: keep
    where a uniform draw is >= p, scale the kept inputs by 1/(1-p); the identity while it is off."""

    def __init__(self, p: float, masks: DropoutMasks):
        super().__init__()
        self.p, self.masks = float(p), masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.masks.on or self.p == 0:
            return x
        draw = torch.rand(x.shape, generator=self.masks.generator(x.device), device=x.device)
        return x * (draw >= self.p).to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def step_dropout(peft_model, names: list[str], p: float, salt: str, batches, validate):
    """Put a ``StepDropout`` in place of PEFT's ``torch.nn.Dropout`` on each LoRA layer; returns train_lora's
    (``batches``, ``validate``) wrapped by their ``DropoutMasks.around`` (as they are when p is 0)."""
    if not p:
        return batches, validate
    masks = DropoutMasks(salt)
    for _, layer in lora_layers(peft_model, names):
        if ADAPTER in getattr(layer, "lora_dropout", {}):
            layer.lora_dropout[ADAPTER] = StepDropout(p, masks)
    return masks.around(batches, validate)


def adapter_ops(peft_model, names: list[str]) -> list[LowRank]:
    """One LowRank op per adapted module: ΔW = scale·B·A with plain (un-prefixed) module names."""
    ops = []
    for name, layer in lora_layers(peft_model, names):
        if getattr(layer, "num_experts", 1) > 1:  # a fused expert tensor: one LowRank per expert
            ops += _expert_ops(name, layer)
            continue
        ops.append(
            LowRank(
                module=name,
                A=layer.lora_A[ADAPTER].weight.detach().to(torch.float32).cpu().clone(),
                B=layer.lora_B[ADAPTER].weight.detach().to(torch.float32).cpu().clone(),
                scale=float(layer.scaling[ADAPTER]),
            )
        )
    return ops


def _expert_ops(name: str, layer) -> list[LowRank]:
    """PEFT's per-expert factors (delta_e = scale·lhs_e·rhs_e in the tensor's stored orientation) as
    LowRank ops on ``<experts>.<e>.<param>`` in [out, in] orientation."""
    with torch.no_grad():
        lhs, rhs, scale = layer.get_delta_factors(ADAPTER)
        lhs, rhs = lhs.detach().to(torch.float32).cpu(), rhs.detach().to(torch.float32).cpu()
    stored_out_in = layer._did_swap_in_out_features  # (E, out, in): delta_e = B_e·A_e
    ops = []
    for e in range(lhs.shape[0]):
        a, b = (rhs[e], lhs[e]) if stored_out_in else (lhs[e].t(), rhs[e].t())
        ops.append(
            LowRank(
                module=f"{name}.{e}.{layer.parameter_name}",
                A=a.contiguous().clone(),
                B=b.contiguous().clone(),
                scale=float(scale),
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
