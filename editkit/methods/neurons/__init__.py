"""`neurons`: erase MLP neurons common to several datasets of one capability (CNL)."""

from __future__ import annotations

from editkit.methods.neurons.fit import (
    NeuronsMethod,
    dataset_neurons,
    kept_per_sample,
    neuron_edit,
    overlap_stats,
)
from editkit.methods.neurons.params import NeuronsParams
from editkit.methods.neurons.report import NeuronsReport

__all__ = [
    "NeuronsReport",
    "NeuronsMethod",
    "NeuronsParams",
    "dataset_neurons",
    "kept_per_sample",
    "neuron_edit",
    "overlap_stats",
]
