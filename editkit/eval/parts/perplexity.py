"""Perplexity on the general test text (``perplexity``), with the recipe's perplexity function (sliding
window, ``editkit.methods.lora``'s text encoding); half the pairwise batch size (longer rows).

Recipe: ``eval.perplexity`` (true). Its data is the general test text (``data.general``'s test split)."""

from __future__ import annotations

from pydantic import Field

from editkit.eval.parts.base import SuitePart


class Perplexity(SuitePart):
    name = "perplexity"
    label = "perplexity"
    fields = {"perplexity": (bool, Field(True, description="perplexity on the general test text"))}
    metrics = {"perplexity": ("perplexity (general text)", "perplexity", "lower is better; should not move")}
    missing_note = "Perplexity was not measured (`eval.perplexity` off or no general text)."
    ability = "perplexity"

    def load(self, ev, general_test, seed, target_test=None):
        return general_test if ev.perplexity else None

    def units(self, data, opts) -> int:
        return len(self.own_data(data, [])) if opts.perplexity_fn is not None else 0

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        bs = max(1, opts.batch_size // 2)
        texts = self.own_data(data, [])
        return {
            "perplexity": float(opts.perplexity_fn(model, tokenizer, texts, batch_size=bs, on_batch=on_batch))
        }

    def dataset(self, key, where):
        return (*where.general, "test") if self.owns(key) else None
