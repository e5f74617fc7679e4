"""`scalpel`: a LoRA trained so the model can no longer tell right from wrong on one capability."""

from __future__ import annotations

from editkit.methods.scalpel.fit import ScalpelBatches, ScalpelLoss, ScalpelMethod, split_validation
from editkit.methods.scalpel.params import ScalpelParams

__all__ = ["ScalpelBatches", "ScalpelLoss", "ScalpelMethod", "ScalpelParams", "split_validation"]
