"""Drift: mean first-token KL(base ‖ this model) on general prompts (``drift_kl``). The base phase measures the
base distribution into the explicit :class:`~editkit.eval.parts.base.Baseline` every later phase is given.

Recipe: ``eval.drift_prompts`` (32): the first twelve words of that many general test texts."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

from editkit.eval.forward import with_positions
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
            enc = with_positions(dict(enc))
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


def drift_prompts(data) -> list[str]:
    """The drift prompts of an ``EvalData`` (empty where drift is not measured)."""
    return Drift().own_data(data, [])


class Drift(SuitePart):
    name = "drift"
    label = "drift"
    fields = {
        "drift_prompts": (int, Field(32, ge=0, description="harmless prompts for first-token KL drift"))
    }
    metrics = {
        "drift_kl": (
            "drift KL(base ‖ model)",
            "kl_divergence",
            "first token on general prompts; 0 = unchanged",
        )
    }
    needs_base = True

    def load(self, ev, general_test, seed, target_test=None):
        return [" ".join(t.split()[:12]) for t in general_test[: ev.drift_prompts]]

    def units(self, data, opts) -> int:
        return len(drift_prompts(data))

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        lp = first_token_logprobs(
            model, tokenizer, drift_prompts(data), batch_size=opts.batch_size, on_batch=on_batch
        )
        if phase == "base":
            baseline.first_token_logprobs = lp
        elif baseline.first_token_logprobs is None:
            raise RuntimeError(f"drift: phase {phase!r} evaluated before the base phase filled the baseline")
        return {"drift_kl": kl_from_base(baseline.first_token_logprobs, lp)}

    def dataset(self, key, where):
        return (*where.general, "test") if self.owns(key) else None
