"""`refusal`: a refusal direction (cleaned against concept atoms: SRA), projected out of the writers."""

from __future__ import annotations

from editkit.methods.refusal.edit import edited_layers, project_edit
from editkit.methods.refusal.fit import RefusalMethod
from editkit.methods.refusal.params import RefusalParams
from editkit.methods.refusal.report import RefusalReport
from editkit.methods.refusal.search import refusal_log_odds

__all__ = [
    "RefusalReport",
    "RefusalMethod",
    "RefusalParams",
    "edited_layers",
    "project_edit",
    "refusal_log_odds",
]
