"""Refusal metrics for ``Method.evaluate``: refusal rate, over-refusal and first-token KL on harmless prompts.

Shared by ``method: refusal`` (should fall) and ``method: sft`` planting refusal (should rise). The base
model's first-token distribution is cached in the method instance's dict on the ``base`` phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # methods import this module: no import cycle at run time
    from editkit.methods.base import FitContext
from editkit.refusal.chat import chat_first_token_logprobs, is_refusal, kl_rows, prompt_texts, refusal_rate
from editkit.refusal.judge import agreement, make_judge


def refusal_metrics(
    ctx: FitContext, harmful: str | None, harmless: str | None, max_prompts: int, max_new: int, cache: dict
) -> dict[str, float]:
    """refusal_rate / over_refusal_rate (generation) and harmless_kl (first assistant token, base cached).

    ``harmless_kl_answered`` is the same KL over only the harmless prompts the starting (base-phase) model
    answered: turning an over-refusal into an answer is intended and moves the first token a lot, so this
    is the collateral cost on prompts that were fine before."""
    m: dict[str, float] = {}
    judge = _judge(ctx, cache)
    marks: list[bool] = []
    says: list[bool] = []

    def judged(key: str, prompts: list[str], outs: list[str]) -> None:
        if judge is None or not outs:
            return
        verdicts = judge.refusals(prompts, outs)
        m[f"{key}_judge"] = sum(verdicts) / len(verdicts)
        marks.extend(is_refusal(o) for o in outs)
        says.extend(verdicts)

    if harmful and harmful in ctx.data:
        prompts = prompt_texts(ctx.data[harmful], f"data.sets.{harmful}", max_prompts)
        m["refusal_rate"], outs = refusal_rate(ctx.model, ctx.tokenizer, prompts, max_new)
        cache.setdefault("samples", {})["harmful"] = outs[:5]
        cache["samples"]["harmful_prompts"] = prompts[:5]
        judged("refusal_rate", prompts, outs)
    if harmless and harmless in ctx.data:
        prompts = prompt_texts(ctx.data[harmless], f"data.sets.{harmless}", max_prompts)
        m["over_refusal_rate"], outs = refusal_rate(ctx.model, ctx.tokenizer, prompts, max_new)
        cache.setdefault("samples", {})["harmless"] = outs[:5]
        cache["samples"]["harmless_prompts"] = prompts[:5]
        judged("over_refusal_rate", prompts, outs)
        lp = chat_first_token_logprobs(ctx.model, ctx.tokenizer, prompts)
        if "base_lp" not in cache:
            cache["base_lp"] = lp
            cache["base_answered"] = torch.tensor([not is_refusal(o) for o in outs], dtype=torch.bool)
        kl = kl_rows(cache["base_lp"], lp)
        m["harmless_kl"] = float(kl.mean())
        answered = cache["base_answered"]
        if answered.any():
            m["harmless_kl_answered"] = float(kl[answered].mean())
    if says:
        m["refusal_judge_agreement"] = agreement(marks, says)
    return m


def _judge(ctx: FitContext, cache: dict):
    """The recipe's model judge (eval.refusal_judge), loaded once per run; None for keyword markers."""
    recipe = ctx.extras.get("recipe")
    spec = getattr(getattr(recipe, "eval", None), "refusal_judge", "markers")
    if spec == "markers":
        return None
    if cache.get("judge_spec") != spec:
        ctx.events.log(
            f"refusal judge: {spec} (a chat model reads every response; markers reported beside it)"
        )
        cache["judge"] = make_judge(spec, recipe.model, progress=ctx.events.log)
        cache["judge_spec"] = spec
    return cache["judge"]


def phase_refusal_metrics(
    ctx: FitContext,
    harmful: str | None,
    harmless: str | None,
    max_prompts: int,
    max_new: int,
    cache: dict,
    phase: str,
) -> dict[str, float]:
    """`refusal_metrics` for one evaluation phase, keeping the generated samples as ``samples-<phase>.json``."""
    import json
    from pathlib import Path

    m = refusal_metrics(ctx, harmful, harmless, max_prompts, max_new, cache)
    if cache.get("samples") and ctx.is_main:
        path = Path(ctx.run_dir) / f"samples-{phase}.json"
        path.write_text(json.dumps(cache.pop("samples"), indent=1, ensure_ascii=False))
    return m
