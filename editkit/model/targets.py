"""Edit targets and weight orientation, with the architecture data file they read.

The names an Edit's ops target are modules of the model or, in a mixture of experts, one expert's down
projection inside a fused 3-D expert tensor (``<experts>.<e>.<down>``): :func:`target_module` resolves
both, :func:`expert_layout` and :func:`moe_spec` give a MoE family's entry of
``editkit/_data/architectures.json`` (:func:`_names` reads that file once). The weight helpers hide how a
module stores its weight (``nn.Linear`` [out, in]; GPT-2's ``Conv1D`` and ``nn.Embedding`` the other way
round), so edits always see [out, in].
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from editkit.errors import AnatomyError
from editkit.model.moe import ExpertDown, ExpertLayout, expert_views


@cache
def _names() -> dict[str, list[str]]:
    return json.loads(resources.files("editkit").joinpath("_data/architectures.json").read_text())


# ---------------------------------------------------------------------------------------------------
# weight orientation helpers (Linear: [out, in]; Conv1D: [in, out]; Embedding: [vocab, hidden])
# ---------------------------------------------------------------------------------------------------


def in_out_features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        return module.weight.shape[0], module.weight.shape[1]
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim
    w = getattr(module, "weight", None)
    if isinstance(w, torch.Tensor) and w.dim() == 2:
        return w.shape[1], w.shape[0]
    raise AnatomyError(f"module {type(module).__name__} has no 2-D weight editkit understands")


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The module's weight as an fp32 copy in [out, in] orientation (one-hot input → output)."""
    w = module.weight.detach()
    if isinstance(module, (Conv1D, nn.Embedding)):
        w = w.t()
    return w.to(torch.float32).clone()


def set_weight_out_in(module: nn.Module, w_out_in: torch.Tensor) -> None:
    """Write an [out, in] fp32 matrix back into the module, cast to the module's dtype."""
    target = module.weight
    w = w_out_in.t() if isinstance(module, (Conv1D, nn.Embedding)) else w_out_in
    with torch.no_grad():
        target.copy_(w.to(target.dtype))


# ---------------------------------------------------------------------------------------------------
# edit targets: modules, and single experts of fused expert tensors
# ---------------------------------------------------------------------------------------------------


def expert_layout(model_type: str | None) -> ExpertLayout | None:
    """The fused-expert layout of a MoE family (``moe`` in the data file), or None."""
    spec = _names()["moe"].get(model_type or "")
    return ExpertLayout.from_spec(model_type, spec) if isinstance(spec, dict) else None  # type: ignore[arg-type]


def moe_spec(model_type: str | None) -> dict | None:
    """The family's raw ``moe`` entry (checkpoint names, gguf architecture), or None for dense models."""
    spec = _names()["moe"].get(model_type or "")
    return spec if isinstance(spec, dict) else None


def split_expert_target(name: str) -> tuple[str, int, str] | None:
    """``a.b.experts.5.down_proj`` → (``a.b.experts``, 5, ``down_proj``); None if not of that form."""
    head, _, param = name.rpartition(".")
    parent, _, idx = head.rpartition(".")
    return (parent, int(idx), param) if parent and idx.isdigit() else None


def target_module(model: nn.Module, name: str) -> nn.Module:
    """The module an edit op names: a submodule, or one expert's down projection of a fused experts tensor
    (an :class:`~editkit.model.moe.ExpertDown` view). AttributeError if the model has neither."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        pass
    parts = split_expert_target(name)
    layout = expert_layout(getattr(getattr(model, "config", None), "model_type", None))
    if parts is not None and layout is not None and parts[2] == layout.down:
        try:
            experts = model.get_submodule(parts[0])
        except AttributeError:
            experts = None
        fused = getattr(experts, layout.down, None) if experts is not None else None
        if isinstance(fused, torch.Tensor) and fused.dim() == 3 and 0 <= parts[1] < fused.shape[0]:
            return expert_views(experts, layout)[parts[1]]
    raise AttributeError(f"{type(model).__name__} has no module or expert {name}")


def is_expert(module: nn.Module) -> bool:
    return isinstance(module, ExpertDown)
