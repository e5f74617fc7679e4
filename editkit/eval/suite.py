"""The evaluation core shared by every method, run on the base model, the edited model and the control.

Metrics (flat names, all in metrics.json and the card):
  target_accuracy            pairwise accuracy on the held-out (test) target items
  heldout/<capability>       pairwise accuracy of each other capability (test items)
  general_capability_score   mean of the heldout/* accuracies
  perplexity                 on the general test text
  blimp_accuracy             BLiMP macro accuracy (when the data is there)
  drift_kl                   mean first-token KL(base ‖ this model) on general prompts
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from editkit.eval.blimp import blimp_accuracy
from editkit.eval.pairwise import pairwise_accuracy
from editkit.sizing import model_eval_batch_size


@dataclass
class EvalData:
    target_test: list[dict] | None
    heldout: dict[str, list[dict]]
    general_test: list[str]
    blimp: dict[str, list[dict]] | None
    drift_prompts: list[str]
    base_first_token_logprobs: torch.Tensor | None = field(default=None, repr=False)


@torch.no_grad()
def first_token_logprobs(model, tokenizer, prompts: list[str], batch_size: int = 16) -> torch.Tensor:
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
    finally:
        tokenizer.padding_side = side
    return torch.cat(outs)


def kl_from_base(base_lp: torch.Tensor, lp: torch.Tensor) -> float:
    """Mean KL(base ‖ edited) over prompts, from log-probs."""
    return float((base_lp.exp() * (base_lp - lp)).sum(-1).mean())


def evaluate(
    model,
    tokenizer,
    data: EvalData,
    *,
    batch_size: int | None = None,
    perplexity_fn: Callable | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Run the suite on ``model`` as it is now (hooks included). Fills the base cache on first call.

    ``batch_size`` None: 16 on the CPU, sized from the free memory on an accelerator
    (:func:`editkit.sizing.model_eval_batch_size`)."""
    say = progress or (lambda _m: None)
    if batch_size is None:
        batch_size = model_eval_batch_size(model)
    m: dict[str, float] = {}
    if data.target_test:
        say("target accuracy")
        m["target_accuracy"] = pairwise_accuracy(model, tokenizer, data.target_test, batch_size=batch_size)
    accs = []
    for name, items in data.heldout.items():
        say(f"held-out: {name}")
        a = pairwise_accuracy(model, tokenizer, items, batch_size=batch_size)
        m[f"heldout/{name}"] = a
        accs.append(a)
    if accs:
        m["general_capability_score"] = sum(accs) / len(accs)
    if data.general_test and perplexity_fn is not None:
        say("perplexity")
        m["perplexity"] = float(
            perplexity_fn(model, tokenizer, data.general_test, batch_size=max(1, batch_size // 2))
        )
    if data.blimp:
        say("BLiMP")
        m["blimp_accuracy"] = blimp_accuracy(model, tokenizer, data.blimp, batch_size=batch_size * 2)["mean"]
    if data.drift_prompts:
        say("drift")
        lp = first_token_logprobs(model, tokenizer, data.drift_prompts, batch_size=batch_size)
        if data.base_first_token_logprobs is None:
            data.base_first_token_logprobs = lp
        m["drift_kl"] = kl_from_base(data.base_first_token_logprobs, lp)
    return m
