"""Model layout from the config alone: where each edited module's weight (and bias) is in a checkpoint.

The model is never instantiated with real weights. Only the module *types* are needed (is a weight stored
[out, in] like ``nn.Linear`` or [in, out] like GPT-2's ``Conv1D``?), and those come from building the
model on the ``meta`` device (:func:`_meta_model`), which allocates nothing. :func:`module_layouts` maps
each module an Edit names to its checkpoint tensors (:class:`ModuleLayout`): a plain 2-D weight, one
expert's per-expert tensor, or slice [e] of a fused expert tensor; what the merge could not do faithfully
(tied embeddings, missing or mis-shaped tensors) is refused in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from editkit.edit.edit import Edit
from editkit.errors import EditkitError
from editkit.export.checkpoint import Checkpoint
from editkit.model.moe import ExpertDown
from editkit.model.targets import moe_spec, split_expert_target, target_module


@dataclass
class ModuleLayout:
    """How an edited module's parameters are stored in the checkpoint."""

    weight_key: str
    bias_key: str | None
    transposed: bool  # stored [in, out] (Conv1D, Embedding): the merge works on the transpose
    expert: int | None = None  # a fused expert tensor: the module is slice [expert] of weight (and bias)


def _meta_model(root: Path, trust_remote_code: bool = False):
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(root, trust_remote_code=trust_remote_code)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EditkitError(f"{root}/config.json: cannot build the model layout: {first}") from None


def module_layouts(edit: Edit, ckpt: Checkpoint, meta_model) -> dict[str, ModuleLayout]:
    """Map each edited module to its checkpoint tensors; refuse what the merge could not do faithfully."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    emb = meta_model.get_input_embeddings()
    out_emb = meta_model.get_output_embeddings()
    tied = out_emb is not None and out_emb.weight is emb.weight
    prefix = getattr(meta_model, "base_model_prefix", "") or ""
    layouts = {}
    for name in edit.modules:
        try:
            mod = target_module(meta_model, name)
        except AttributeError:
            raise EditkitError(f"edit targets module '{name}', which this model does not have") from None
        if isinstance(mod, ExpertDown):
            layouts[name] = _expert_layout(name, mod, ckpt, prefix)
            continue
        if tied and (mod is emb or mod is out_emb):
            raise EditkitError(
                f"edit targets the tied embeddings '{name}': editing them would also change the other "
                "side; untie the embeddings or leave embeddings out of the edit"
            )
        w = getattr(mod, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            raise EditkitError(f"edit targets '{name}', which has no 2-D weight")
        candidates = [name]
        if prefix and name.startswith(prefix + "."):
            candidates.append(name[len(prefix) + 1 :])  # checkpoints saved from the base model
        saved = saved_name(meta_model, f"{name}.weight")  # renamed on save (Mixtral's block_sparse_moe.gate)
        if saved is not None and saved != f"{name}.weight":
            candidates.append(saved[: -len(".weight")])
        key = next((c for c in candidates if f"{c}.weight" in ckpt.entries), None)
        if key is None:
            raise EditkitError(f"{ckpt.root}: checkpoint has no tensor '{name}.weight' for the edited module")
        stored = ckpt.entries[f"{key}.weight"].shape
        if list(stored) != list(w.shape):
            raise EditkitError(
                f"{ckpt.root}: '{key}.weight' has shape {stored}, the config says {list(w.shape)}"
            )
        bias = f"{key}.bias" if isinstance(getattr(mod, "bias", None), torch.Tensor) else None
        if bias is not None and bias not in ckpt.entries:
            bias = None
        layouts[name] = ModuleLayout(f"{key}.weight", bias, isinstance(mod, (Conv1D, nn.Embedding)))
    return layouts


def saved_name(meta_model, key: str) -> str | None:
    """The name ``save_pretrained`` gives parameter ``key`` (transformers 5 renames some on save, e.g.
    Mixtral's router ``mlp.gate`` → ``block_sparse_moe.gate``); None when it is not a plain rename."""
    try:
        from transformers.core_model_loading import revert_weight_conversion

        t = meta_model.get_parameter(key)
        out = revert_weight_conversion(meta_model, {key: t})
    except Exception:  # noqa: BLE001 - no conversion machinery or not a parameter: keep the name
        return None
    return next(iter(out)) if len(out) == 1 else None


def _expert_layout(name: str, view, ckpt: Checkpoint, prefix: str) -> ModuleLayout:
    """Where one expert's down projection is in the checkpoint: its own [out, in] tensor in the per-expert
    format ``save_pretrained`` writes (``moe.<family>.checkpoint_down`` in the data file), or slice [e] of
    the fused tensor (as the model holds it; GPT-OSS checkpoints store it so)."""
    lay = view.layout
    experts, e, _ = split_expert_target(name)  # type: ignore[misc]
    out_in = list(view.weight.shape)
    fused_shape = [getattr(view.experts, lay.down).shape[0], *(out_in[::-1] if lay.transposed else out_in)]
    cands: list[tuple[str, int | None, bool, list[int]]] = []
    per_expert = (moe_spec(lay.family) or {}).get("checkpoint_down")
    layer = re.fullmatch(r"(.*\.\d+)\.[^.]+\.[^.]+", experts)
    if per_expert and layer:
        cands.append((f"{layer.group(1)}.{per_expert.format(e=e)}", None, False, out_in))
    cands.append((f"{experts}.{lay.down}", e, lay.transposed, fused_shape))
    for key, expert, transposed, shape in cands:
        for k in (key, key[len(prefix) + 1 :] if prefix and key.startswith(prefix + ".") else None):
            if k is None or k not in ckpt.entries:
                continue
            if ckpt.entries[k].shape != shape:
                raise EditkitError(
                    f"{ckpt.root}: '{k}' has shape {ckpt.entries[k].shape}, the config says {shape}"
                )
            bias = None
            if lay.down_bias:
                bias = k[: -len(lay.down)] + lay.down_bias if expert is not None else None
                if bias not in ckpt.entries:
                    raise EditkitError(
                        f"{ckpt.root}: no bias tensor for expert {e} of '{experts}' beside '{k}'; "
                        "cannot merge its edit exactly"
                    )
            return ModuleLayout(k, bias, transposed, expert)
    raise EditkitError(
        f"{ckpt.root}: checkpoint has neither '{cands[0][0]}' nor the fused '{cands[-1][0]}' "
        f"for the edited expert {name}"
    )
