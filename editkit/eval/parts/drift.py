"""Drift: mean first-token KL(base ‖ this model) on general prompts (``drift_kl``). The base phase measures the
base distribution into the explicit :class:`~editkit.eval.parts.base.Baseline` every later phase is given."""

from __future__ import annotations

from collections.abc import Callable

import torch

from editkit.eval.parts.base import SuitePart


@torch.no_grad()
def first_token_logprobs(
    model, tokenizer, prompts: list[str], batch_size: int = 16, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """fp32 log-softmax of the next-token distribution after each prompt (left-padded batches)."""
    if not prompts:
        return torch.empty(0)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    dev = next(model.parameters()).device
    outs = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True)
            logits = model(**{k: v.to(dev) for k, v in enc.items()}, use_cache=False).logits[:, -1, :]
            outs.append(torch.log_softmax(logits.float(), dim=-1).cpu())
            if on_batch is not None:
                on_batch(len(prompts[i : i + batch_size]))
    finally:
        tokenizer.padding_side = side
    return torch.cat(outs)


def kl_from_base(base_lp: torch.Tensor, lp: torch.Tensor) -> float:
    """Mean KL(base ‖ edited) over prompts, from log-probs."""
    return float((base_lp.exp() * (base_lp - lp)).sum(-1).mean())


class Drift(SuitePart):
    name = "drift"
    label = "drift"

    def units(self, data, opts) -> int:
        return len(data.drift_prompts)

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        lp = first_token_logprobs(
            model, tokenizer, data.drift_prompts, batch_size=opts.batch_size, on_batch=on_batch
        )
        if phase == "base":
            baseline.first_token_logprobs = lp
        elif baseline.first_token_logprobs is None:
            raise RuntimeError(f"drift: phase {phase!r} evaluated before the base phase filled the baseline")
        return {"drift_kl": kl_from_base(baseline.first_token_logprobs, lp)}
