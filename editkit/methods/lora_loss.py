"""What a LoRA method's loss hands the shared loop (``editkit.methods.lora_fit``), and the two loss helpers
both LoRA methods (``scalpel``, ``sft``) use: ``LossOut`` (the scalar, its named terms and metrics),
``encode_text`` (general-text rows as padded ids) and ``kl_to_base`` (KL to the same model with its adapter
disabled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from editkit.eval.forward import to_device

__all__ = ["LossOut", "encode_text", "kl_to_base"]


@dataclass
class LossOut:
    """What a loss callable returns: the scalar to minimise, its named terms and extra metrics."""

    loss: torch.Tensor
    terms: Mapping[str, float | torch.Tensor] = field(default_factory=dict)
    metrics: Mapping[str, float | torch.Tensor] = field(default_factory=dict)


def encode_text(tokenizer, rows: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """Right-padded token ids and mask, each row cut to ``max_length`` tokens."""
    ids = [list(tokenizer(r, add_special_tokens=True)["input_ids"])[:max_length] for r in rows]
    width = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids = torch.full((len(ids), width), int(pad), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def kl_to_base(
    peft_model, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean KL(p_base ‖ p_adapted) of the next-token distribution over the kept positions.

    The base distribution is the same PEFT model with its adapter disabled (no second copy of the weights);
    ``keep`` (bool, same shape as ``input_ids``) selects the positions, by default every real token.
    """
    dev = peft_model.get_input_embeddings().weight.device
    # the kept positions as indices worked out where the mask lives (the host), so nothing waits on the GPU
    sel = (attention_mask if keep is None else keep).bool().nonzero(as_tuple=True)
    ids, mask = to_device(input_ids, dev), to_device(attention_mask, dev)
    sel = tuple(to_device(i, dev) for i in sel)
    with torch.no_grad(), peft_model.disable_adapter():
        base = torch.log_softmax(
            peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1
        )
    edit = torch.log_softmax(
        peft_model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float(), -1
    )
    kl = (base.exp() * (base - edit)).sum(-1)
    return kl[sel].mean()
