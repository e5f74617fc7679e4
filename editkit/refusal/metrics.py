"""Refusal metrics for ``Method.evaluate``: refusal rate, over-refusal and first-token KL on harmless prompts.

Shared by ``method: refusal`` (should fall) and ``method: sft`` planting refusal (should rise). The base
model's first-token distribution is kept in ``ctx.baseline`` by the ``base`` phase (and only by it); later
phases compare with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from editkit.refusal.chat import chat_first_token_logprobs, is_refusal, kl_rows, prompt_texts, refusal_rate
from editkit.refusal.judge import agreement, make_judge

if TYPE_CHECKING:  # methods import this module: no import cycle at run time
    from editkit.methods.base import FitContext


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
    first generations (and their prompts) per set.

    With a model judge (``ctx.refusal_judge``), ``refusal_rate_judge`` / ``over_refusal_rate_judge`` are
    its rates on the same responses and ``refusal_judge_agreement`` the share of responses (both sets) on
    which it and the keyword markers agree; ``refusal_rate`` stays the markers' rate."""
    m: dict[str, float] = {}
    samples = {} if samples is None else samples
    judge = _judge(ctx)
    marks: list[bool] = []
    says: list[bool] = []

    def judged(key: str, prompts: list[str], outs: list[str]) -> None:
        if judge is None or not outs:
            return
        verdicts = judge.refusals(prompts, outs)
        ctx.count(len(outs))
        m[f"{key}_judge"] = sum(verdicts) / len(verdicts)
        marks.extend(is_refusal(o) for o in outs)
        says.extend(verdicts)
        m["refusal_judge_agreement"] = agreement(marks, says)  # over every set judged so far

    if harmful and harmful in ctx.data:
        prompts = prompt_texts(ctx.data[harmful], f"data.sets.{harmful}", max_prompts)
        m["refusal_rate"], outs = refusal_rate(ctx.model, ctx.tokenizer, prompts, max_new, on_rows=ctx.count)
        samples["harmful"], samples["harmful_prompts"] = outs[:5], prompts[:5]
        samples.setdefault("all", {})["harmful"] = {"prompts": prompts, "responses": outs}
        judged("refusal_rate", prompts, outs)
    if harmless and harmless in ctx.data:
        prompts = prompt_texts(ctx.data[harmless], f"data.sets.{harmless}", max_prompts)
        m["over_refusal_rate"], outs = refusal_rate(
            ctx.model, ctx.tokenizer, prompts, max_new, on_rows=ctx.count
        )
        samples["harmless"], samples["harmless_prompts"] = outs[:5], prompts[:5]
        samples.setdefault("all", {})["harmless"] = {"prompts": prompts, "responses": outs}
        judged("over_refusal_rate", prompts, outs)
        lp = chat_first_token_logprobs(ctx.model, ctx.tokenizer, prompts)
        ctx.count(len(prompts))
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


def refusal_eval_units(ctx: FitContext, harmful: str | None, harmless: str | None, max_prompts: int) -> int:
    """The units `refusal_metrics` counts through ``ctx.count``: each generated response, each response
    the model judge reads, each harmless prompt's first-token forward."""
    judge = getattr(ctx, "refusal_judge", "markers") != "markers"
    units = 0
    for name, kl in ((harmful, 0), (harmless, 1)):
        if name and name in ctx.data:
            n = min(len(ctx.data[name]), max_prompts)
            units += n * (1 + judge + kl)
    return units


def _judge(ctx: FitContext):
    """The run's model judge (``eval.refusal_judge``), loaded once; None for keyword markers."""
    spec = getattr(ctx, "refusal_judge", "markers")
    if spec == "markers":
        return None
    if spec not in ctx.judges:
        ctx.events.log(
            f"refusal judge: {spec} (a chat model reads every response; markers reported beside it)"
        )
        ctx.judges[spec] = make_judge(spec, ctx.model_spec, progress=ctx.events.log)
    return ctx.judges[spec]


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
    every = samples.pop("all", None)
    if samples and ctx.is_main:
        path = Path(ctx.run_dir) / f"samples-{phase}.json"
        path.write_text(json.dumps(samples, indent=1, ensure_ascii=False))
        # every prompt and response, for re-judging later (bench/bench_judge.py)
        path = Path(ctx.run_dir) / f"responses-{phase}.json"
        path.write_text(json.dumps(every, indent=1, ensure_ascii=False))
    return m


#: how the card labels the metrics above: key -> (label, model-index metric type, how to read it)
REFUSAL_METRICS: dict[str, tuple[str, str, str]] = {
    "refusal_rate": ("refusal rate (harmful prompts)", "refusal_rate", "share of harmful prompts refused"),
    "over_refusal_rate": (
        "over-refusal rate (harmless prompts)",
        "refusal_rate",
        "share of harmless prompts refused",
    ),
    "refusal_rate_judge": (
        "refusal rate, model judge (harmful prompts)",
        "refusal_rate",
        "eval.refusal_judge: a chat model read each response",
    ),
    "over_refusal_rate_judge": (
        "over-refusal rate, model judge (harmless prompts)",
        "refusal_rate",
        "eval.refusal_judge: a chat model read each response",
    ),
    "refusal_judge_agreement": (
        "markers vs model judge agreement",
        "accuracy",
        "share of responses (harmful + harmless) both judges label alike",
    ),
    "harmless_kl": ("harmless KL (first token)", "kl_divergence", "chat template, harmless prompts"),
    "harmless_kl_answered": (
        "harmless KL, answered prompts",
        "kl_divergence",
        "only the harmless prompts the starting model answered (not over-refused)",
    ),
}
REFUSAL_HEADLINE = {
    "refusal_rate": "Refusal rate on harmful prompts went from {base} to {edited}.",
    "refusal_rate_judge": "By the model judge (eval.refusal_judge) instead of keyword markers: {base} to {edited}.",
}
