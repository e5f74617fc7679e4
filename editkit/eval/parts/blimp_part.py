"""BLiMP: macro accuracy over the minimal pairs in ``../shared/data/blimp`` when the data is there
(``blimp_accuracy``); twice the pairwise batch size (short sentences)."""

from __future__ import annotations

from editkit.eval.blimp import blimp_accuracy
from editkit.eval.parts.base import SuitePart


class Blimp(SuitePart):
    name = "blimp"
    label = "BLiMP"

    def units(self, data, opts) -> int:
        return sum(2 * len(v) for v in (data.blimp or {}).values())

    def wanted(self, data, opts) -> bool:
        return bool(data.blimp)

    def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
        got = blimp_accuracy(model, tokenizer, data.blimp, batch_size=opts.batch_size * 2, on_batch=on_batch)
        return {"blimp_accuracy": got["mean"]}
