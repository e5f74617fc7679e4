"""Refusal metrics for ``Method.evaluate``: refusal rate, over-refusal and first-token KL on harmless prompts.

Shared by ``method: refusal`` (should fall) and ``method: sft`` planting refusal (should rise). The base
model's first-token distribution is kept in ``ctx.baseline`` by the ``base`` phase (and only by it); later
phases compare with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from editkit.methods.base import FitContext
from editkit.refusal.chat import chat_first_token_logprobs, is_refusal, kl_rows, prompt_texts, refusal_rate


def refusal_metrics(
    ctx: FitContext,
    harmful: str | None,
    harmless: str | None,
    max_prompts: int,
    max_new: int,
    phase: str,
    samples: dict | None = None,
) -> dict[str, float]:
    """refusal_rate / over_refusal_rate (generation) and harmless_kl (first assistant token, base cached).

    ``harmless_kl_answered`` is the same KL over only the harmless prompts the starting (base-phase) model
    answered: turning an over-refusal into an answer is intended and moves the first token a lot, so this
    is the collateral cost on prompts that were fine before. The KLs need the ``base`` phase to have run
    first (its distribution is in ``ctx.baseline``); without it they are left out. ``samples`` receives the
    first generations per set."""
    m: dict[str, float] = {}
    samples = {} if samples is None else samples
    if harmful and harmful in ctx.data:
        prompts = prompt_texts(ctx.data[harmful], f"data.sets.{harmful}", max_prompts)
        m["refusal_rate"], outs = refusal_rate(ctx.model, ctx.tokenizer, prompts, max_new)
        samples["harmful"] = outs[:5]
    if harmless and harmless in ctx.data:
        prompts = prompt_texts(ctx.data[harmless], f"data.sets.{harmless}", max_prompts)
        m["over_refusal_rate"], outs = refusal_rate(ctx.model, ctx.tokenizer, prompts, max_new)
        samples["harmless"] = outs[:5]
        lp = chat_first_token_logprobs(ctx.model, ctx.tokenizer, prompts)
        if phase == "base":
            ctx.baseline["refusal_base_lp"] = lp
            answered = torch.tensor([not is_refusal(o) for o in outs], dtype=torch.bool)
            ctx.baseline["refusal_base_answered"] = answered
        if "refusal_base_lp" not in ctx.baseline:
            return m
        kl = kl_rows(ctx.baseline["refusal_base_lp"], lp)
        m["harmless_kl"] = float(kl.mean())
        answered = ctx.baseline["refusal_base_answered"]
        if answered.any():
            m["harmless_kl_answered"] = float(kl[answered].mean())
    return m


def phase_refusal_metrics(
    ctx: FitContext,
    harmful: str | None,
    harmless: str | None,
    max_prompts: int,
    max_new: int,
    phase: str,
) -> dict[str, float]:
    """`refusal_metrics` for one evaluation phase, keeping the generated samples as ``samples-<phase>.json``."""
    samples: dict = {}
    m = refusal_metrics(ctx, harmful, harmless, max_prompts, max_new, phase, samples)
    if samples and ctx.is_main:
        path = Path(ctx.run_dir) / f"samples-{phase}.json"
        path.write_text(json.dumps(samples, indent=1, ensure_ascii=False))
    return m


#: how the card labels the metrics above: key -> (label, model-index metric type, how to read it)
REFUSAL_METRICS: dict[str, tuple[str, str, str]] = {
    "refusal_rate": ("refusal rate (harmful prompts)", "refusal_rate", "share of harmful prompts refused"),
    "over_refusal_rate": (
        "over-refusal rate (harmless prompts)",
        "refusal_rate",
        "share of harmless prompts refused",
    ),
    "harmless_kl": ("harmless KL (first token)", "kl_divergence", "chat template, harmless prompts"),
    "harmless_kl_answered": (
        "harmless KL, answered prompts",
        "kl_divergence",
        "only the harmless prompts the starting model answered (not over-refused)",
    ),
}
REFUSAL_HEADLINE = {"refusal_rate": "Refusal rate on harmful prompts went from {base} to {edited}."}
