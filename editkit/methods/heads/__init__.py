"""`heads`: knock out attention heads found by compressed sensing over random knockouts."""

from __future__ import annotations

from editkit.methods.heads.fit import HeadsMethod, batch_rows_for, head_label, head_mask_edit, locate_heads
from editkit.methods.heads.params import HeadsParams
from editkit.methods.heads.report import HeadsReport

__all__ = [
    "HeadsReport",
    "HeadsMethod",
    "HeadsParams",
    "batch_rows_for",
    "head_label",
    "head_mask_edit",
    "locate_heads",
]
