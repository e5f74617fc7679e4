"""`editkit eval --refusal`: the refusal numbers of any model against its base, measured as a run measures them.

A refusal removal made by another tool (heretic's saved model, an abliterated checkpoint from the Hub) or by
editkit is scored on the same prompts by the same code as ``editkit apply`` scores its edit
(:func:`editkit.eval.refusal.metrics.refusal_metrics`): greedy chat responses to the built-in harmful and
harmless ``test`` prompts read by the keyword markers and by a judge, the first-token KL(base ‖ model) on the
harmless prompts (all of them, and those the base answered); beside them, on both models, what the parts of the
evaluation suite that need no target measure (``suite``: `editkit eval` passes its own). The base model's side
comes from the base evaluation cache when an earlier run or evaluation measured the same weights under the same
settings (``editkit.eval.refusal.base_cache``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from editkit.data.prompt_sets import load_prompt_set
from editkit.eval.refusal.judge import ModelJudge
from editkit.eval.refusal.metrics import refusal_eval_units, refusal_metrics
from editkit.model.load import load_model
from editkit.run.events import Tally

SETS = {"harmful": "harmful", "harmless": "harmless"}


class _Log:
    def __init__(self, say: Callable[[str], None]):
        self.say = say

    def log(self, message: str, level: str = "info") -> None:
        self.say(message if level == "info" else f"{level}: {message}")


@dataclass
class _Scoring:
    """What the refusal metrics read from a fit context, for a model outside a run."""

    data: dict[str, list[dict]]
    model: Any
    tokenizer: Any
    model_spec: Any
    model_path: str
    events: _Log
    count: Callable[[int], None]
    refusal_judge: str = "self"
    judges: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    base_eval_cache: bool = True
    is_main: bool = True
    eval_generations: bool = True


def refusal_of_model(
    path: str,
    base_spec,
    judge: str = "self",
    n: int = 100,
    max_new: int = 64,
    cache: bool = True,
    say: Callable[[str], None] = lambda _m: None,
    on_units: Callable[[int, int], None] | None = None,
    suite: Callable[[Any, Any, Callable[[int], None]], dict] | None = None,
    suite_units: int = 0,
) -> dict[str, Any]:
    """{"base": metrics, "model": metrics, "responses": the model's responses per set}: refusal rates (markers,
    and the judge's unless ``judge`` is 'markers'), harmless KL against the base, and what ``suite(model,
    tokenizer, count)`` measures (``suite_units`` of progress). ``judge``: 'self' (the base model reads every
    response), 'markers', or a chat model to load."""
    data = {role: load_prompt_set(name, "test", f"--refusal {role}")[:n] for role, name in SETS.items()}
    base = load_model(base_spec, progress=say)
    count = Tally(on_units)
    ctx = _Scoring(data, base.model, base.tokenizer, base_spec, base.path, _Log(say), count, judge,
                   base_eval_cache=cache)  # fmt: skip
    if judge == "self":  # the base model reads the responses: the weights already loaded, not a second copy
        ctx.judges["self"] = ModelJudge(base.model, base.tokenizer, "self")
    count.total = 2 * (refusal_eval_units(ctx, "harmful", "harmless", n) + (suite_units if suite else 0))
    out: dict[str, Any] = {}
    out["base"] = refusal_metrics(ctx, "harmful", "harmless", n, max_new, "base")
    if suite is not None:
        out["base"].update(suite(base.model, base.tokenizer, count))
    out["base_eval_cache"] = ctx.baseline.get("eval_cache", {}).get("status")
    target = load_model(path, progress=say)
    ctx.model, ctx.tokenizer = target.model, target.tokenizer
    samples: dict = {}
    out["model"] = refusal_metrics(ctx, "harmful", "harmless", n, max_new, "edited", samples)
    if suite is not None:
        out["model"].update(suite(target.model, target.tokenizer, count))
    out["responses"] = samples.get("all", {})
    out["settings"] = {"prompts": n, "max_new_tokens": max_new, "judge": judge, "split": "test"}
    return out
