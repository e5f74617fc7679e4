"""`refusal`: a refusal direction (cleaned against concept atoms: SRA), projected out of the writers."""

from __future__ import annotations

from editkit.methods.refusal.fit import RefusalMethod, edited_layers, project_edit, refusal_log_odds
from editkit.methods.refusal.params import RefusalParams

__all__ = ["RefusalMethod", "RefusalParams", "edited_layers", "project_edit", "refusal_log_odds"]
