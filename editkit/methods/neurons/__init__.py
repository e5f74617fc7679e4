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

__all__ = [
    "NeuronsMethod",
    "NeuronsParams",
    "dataset_neurons",
    "kept_per_sample",
    "neuron_edit",
    "overlap_stats",
]
