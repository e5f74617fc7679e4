"""`sft`: install a behaviour with a LoRA fine-tune on (prompt, response) pairs."""

from __future__ import annotations

from editkit.methods.sft.fit import SftMethod, build_example, build_pairs, collate, response_loss, sft_loss
from editkit.methods.sft.params import SftParams
from editkit.methods.sft.report import SftReport

__all__ = [
    "SftReport",
    "SftMethod",
    "SftParams",
    "build_example",
    "build_pairs",
    "collate",
    "response_loss",
    "sft_loss",
]
