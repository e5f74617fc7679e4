"""Perplexity on the general test text (``perplexity``), with the recipe's perplexity function (sliding
window, ``editkit.methods.lora``'s text encoding); half the pairwise batch size (longer rows)."""

from __future__ import annotations

from editkit.eval.parts.base import SuitePart


class Perplexity(SuitePart):
    name = "perplexity"
    label = "perplexity"

    def units(self, data, opts) -> int:
        return len(data.general_test) if opts.perplexity_fn is not None else 0

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        bs = max(1, opts.batch_size // 2)
        return {
            "perplexity": float(
                opts.perplexity_fn(model, tokenizer, data.general_test, batch_size=bs, on_batch=on_batch)
            )
        }
