"""The evaluation core shared by every method, run on the base model, the edited model and the control.

Metrics (flat names, all in metrics.json and the card):
  target_accuracy            pairwise accuracy on the held-out (test) target items
  target_accuracy/<answer>   the same on the items whose right answer is <answer> (sets with 2-10 distinct
                             right answers, e.g. " bad" / " good"): a removal lowers every class, a tilt
                             towards one answer raises one class and lowers the other
  target_balanced_accuracy   mean of the per-answer accuracies
  target_mean_margin         mean of ℓ(correct) − ℓ(incorrect) (length-normalised log-probs; > 0 = right)
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
from editkit.eval.pairwise import pairwise_accuracy, pairwise_margins
from editkit.eval.refusal.chat import generate
from editkit.eval.subsets import answer_class, answer_classes
from editkit.model.sizing import model_eval_batch_size


@dataclass
class EvalData:
    target_test: list[dict] | None
    heldout: dict[str, list[dict]]
    general_test: list[str]
    blimp: dict[str, list[dict]] | None
    drift_prompts: list[str]
    generation_prompts: list[str] = field(default_factory=list)
    base_first_token_logprobs: torch.Tensor | None = field(default=None, repr=False)


def class_key(answer: str) -> str:
    """Metric-name form of an answer class: ``" bad"`` → ``target_accuracy/bad``."""
    return "target_accuracy/" + (" ".join(answer.split()) or repr(answer))


def target_metrics(triplets: list[dict], margins: torch.Tensor) -> dict[str, float]:
    """Accuracy, per-answer-class accuracy, balanced accuracy and mean signed margin of the target set."""
    right = margins > 0
    m = {"target_accuracy": float(right.float().mean()) if len(triplets) else 0.0}
    classes = answer_classes(triplets)
    if classes:
        per = {}
        for c in classes:
            idx = [i for i, t in enumerate(triplets) if answer_class(t) == c]
            per[c] = float(right[idx].float().mean())
            m[class_key(c)] = per[c]
        m["target_balanced_accuracy"] = sum(per.values()) / len(per)
    if len(triplets):
        m["target_mean_margin"] = float(margins.mean())
    return m


def evaluation_units(data: EvalData, perplexity: bool = True) -> int:
    """How many scored rows ``evaluate`` goes through (the total of its progress reports)."""
    n = 2 * len(data.target_test or [])
    n += sum(2 * len(v) for v in data.heldout.values())
    n += len(data.general_test) if perplexity else 0
    n += sum(2 * len(v) for v in (data.blimp or {}).values())
    return n + len(data.drift_prompts)


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


def evaluate(
    model,
    tokenizer,
    data: EvalData,
    *,
    batch_size: int | None = None,
    perplexity_fn: Callable | None = None,
    progress: Callable[[str], None] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Run the suite on ``model`` as it is now (hooks included). Fills the base cache on first call.

    ``progress(text)`` names each part as it starts; ``on_rows(k)`` counts scored rows, adding up to
    ``evaluation_units(data, perplexity_fn is not None)`` by the end (for a progress bar with a total).
    """
    say = progress or (lambda _m: None)
    count = on_rows or (lambda _k: None)

    class _Part:
        """Reports exactly ``n`` rows for a part, whatever its batches reported (short texts are skipped)."""

        def __init__(self, n: int):
            self.n, self.done = n, 0

        def __call__(self, k: int) -> None:
            k = min(k, self.n - self.done)
            self.done += k
            if k:
                count(k)

        def finish(self) -> None:
            self(self.n - self.done)

    if batch_size is None:  # 16 on the CPU, sized from the free memory on an accelerator
        batch_size = model_eval_batch_size(model)
    m: dict[str, float] = {}
    if data.target_test:
        say("target accuracy")
        part = _Part(2 * len(data.target_test))
        margins = pairwise_margins(model, tokenizer, data.target_test, batch_size=batch_size, on_batch=part)
        part.finish()
        m.update(target_metrics(data.target_test, margins))
    accs = []
    for name, items in data.heldout.items():
        say(f"held-out: {name}")
        part = _Part(2 * len(items))
        a = pairwise_accuracy(model, tokenizer, items, batch_size=batch_size, on_batch=part)
        part.finish()
        m[f"heldout/{name}"] = a
        accs.append(a)
    if accs:
        m["general_capability_score"] = sum(accs) / len(accs)
    if data.general_test and perplexity_fn is not None:
        say("perplexity")
        part = _Part(len(data.general_test))
        m["perplexity"] = float(
            perplexity_fn(
                model, tokenizer, data.general_test, batch_size=max(1, batch_size // 2), on_batch=part
            )
        )
        part.finish()
    if data.blimp:
        say("BLiMP")
        part = _Part(sum(2 * len(v) for v in data.blimp.values()))
        m["blimp_accuracy"] = blimp_accuracy(
            model, tokenizer, data.blimp, batch_size=batch_size * 2, on_batch=part
        )["mean"]
        part.finish()
    if data.drift_prompts:
        say("drift")
        part = _Part(len(data.drift_prompts))
        lp = first_token_logprobs(model, tokenizer, data.drift_prompts, batch_size=batch_size, on_batch=part)
        part.finish()
        if data.base_first_token_logprobs is None:
            data.base_first_token_logprobs = lp
        m["drift_kl"] = kl_from_base(data.base_first_token_logprobs, lp)
    return m


def greedy_generations(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy continuations of ``prompts`` (no chat template: the target prompts are completions)."""
    if not prompts:
        return []
    return generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=len(prompts), chat=False
    )
