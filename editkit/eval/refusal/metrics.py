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

from editkit.eval.refusal.base_cache import cached_measure
from editkit.eval.refusal.chat import (
    chat_first_token_logprobs,
    is_refusal,
    kl_rows,
    prompt_texts,
    refusal_rate,
)
from editkit.eval.refusal.judge import agreement, make_judge

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
    which it and the keyword markers agree; ``refusal_rate`` stays the markers' rate.

    The ``base`` phase's responses, verdicts and first-token distribution come from the base evaluation
    cache when ``ctx.base_eval_cache`` is on and an earlier run measured the same weights under the same
    settings (:mod:`editkit.eval.refusal.base_cache`). Other phases with ``ctx.eval_generations`` off (an edit
    no rule can pick) generate nothing: only the harmless KLs are measured."""
    sets = {}
    for role, name in (("harmful", harmful), ("harmless", harmless)):
        if name and name in ctx.data:
            sets[role] = prompt_texts(ctx.data[name], f"data.sets.{name}", max_prompts)
    if phase == "base":
        raw = cached_measure(ctx, sets, max_new, lambda: measure_sets(ctx, sets, max_new))
    else:
        raw = measure_sets(ctx, sets, max_new, generations=getattr(ctx, "eval_generations", True))
    return metrics_from(ctx, raw, phase, {} if samples is None else samples)


def measure_sets(ctx: FitContext, sets: dict[str, list[str]], max_new: int, generations: bool = True) -> dict:
    """What the metrics are computed from: per role (harmful / harmless) the prompts, the greedy responses,
    the markers' verdicts and the judge's (None with markers only); and the harmless prompts' first-token
    log-probs (``harmless_lp``). With ``generations=False``: the log-probs only."""
    raw: dict = {"sets": {}, "harmless_lp": None}
    judge = _judge(ctx) if generations else None
    for role, prompts in sets.items():
        if generations:
            _, outs = refusal_rate(ctx.model, ctx.tokenizer, prompts, max_new, on_rows=ctx.count)
            verdicts = None
            if judge is not None and outs:
                verdicts = judge.refusals(prompts, outs)
                ctx.count(len(outs))
            markers = [is_refusal(o) for o in outs]
            raw["sets"][role] = {"prompts": prompts, "responses": outs, "markers": markers, "judge": verdicts}
        if role == "harmless":
            raw["harmless_lp"] = chat_first_token_logprobs(ctx.model, ctx.tokenizer, prompts)
            ctx.count(len(prompts))
    return raw


def metrics_from(ctx: FitContext, raw: dict, phase: str, samples: dict) -> dict[str, float]:
    """The metrics of a measured (or cached) ``raw``; the ``base`` phase keeps its first-token distribution
    (and which harmless prompts it answered) in ``ctx.baseline`` for the later phases."""
    m: dict[str, float] = {}
    marks: list[bool] = []
    says: list[bool] = []
    for role, key in (("harmful", "refusal_rate"), ("harmless", "over_refusal_rate")):
        r = raw["sets"].get(role)
        if r is None:
            continue
        prompts, outs = r["prompts"], r["responses"]
        m[key] = sum(r["markers"]) / len(outs) if outs else float("nan")
        samples[role], samples[f"{role}_prompts"] = outs[:5], prompts[:5]
        samples.setdefault("all", {})[role] = {"prompts": prompts, "responses": outs}
        if r["judge"] is not None:
            m[f"{key}_judge"] = sum(r["judge"]) / len(r["judge"])
            marks.extend(r["markers"])
            says.extend(r["judge"])
            m["refusal_judge_agreement"] = agreement(marks, says)  # over every set judged so far
    lp = raw.get("harmless_lp")
    if lp is None:
        return m
    if phase == "base":
        ctx.baseline["refusal_base_lp"] = lp
        markers = raw["sets"]["harmless"]["markers"]
        ctx.baseline["refusal_base_answered"] = torch.tensor([not x for x in markers], dtype=torch.bool)
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
    the model judge reads, each harmless prompt's first-token forward (with ``ctx.eval_generations`` off,
    only the forwards)."""
    judge = getattr(ctx, "refusal_judge", "markers") != "markers"
    gen = getattr(ctx, "eval_generations", True)
    units = 0
    for name, kl in ((harmful, 0), (harmless, 1)):
        if name and name in ctx.data:
            n = min(len(ctx.data[name]), max_prompts)
            units += n * ((1 + judge) * gen + kl)
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
