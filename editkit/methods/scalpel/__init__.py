"""`scalpel`: a LoRA trained so the model can no longer tell right from wrong on one capability."""

from __future__ import annotations

from editkit.methods.scalpel.fit import ScalpelBatches, ScalpelLoss, ScalpelMethod, split_validation
from editkit.methods.scalpel.params import ScalpelParams
from editkit.methods.scalpel.report import ScalpelReport

__all__ = [
    "ScalpelReport",
    "ScalpelBatches",
    "ScalpelLoss",
    "ScalpelMethod",
    "ScalpelParams",
    "split_validation",
]
