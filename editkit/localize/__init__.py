"""Localisation helpers: where in the network does a capability live?

* :mod:`editkit.localize.head_masks` — per-row query-head knockouts at the o_proj input, so one forward
  evaluates many knockout masks (compressed sensing over heads).
* :mod:`editkit.localize.designs` — which heads each trial knocks out (balanced random, exhaustive).
* :mod:`editkit.localize.recovery` — sparse recovery of per-head effects from trial scores (scikit-learn).
* :mod:`editkit.localize.attribution` — integrated-gradient / activation×gradient attribution of MLP neurons.
* :mod:`editkit.localize.class_stats` — class-conditional statistics of the residual stream (frame-centred class
  means, between-class share): where a linear probe could read a capability.
"""

from editkit.localize.attribution import neuron_attributions
from editkit.localize.designs import balanced_design, exhaustive_design
from editkit.localize.head_masks import HeadMasker, score_head_masks
from editkit.localize.recovery import sparse_recovery

__all__ = [
    "HeadMasker",
    "balanced_design",
    "exhaustive_design",
    "neuron_attributions",
    "score_head_masks",
    "sparse_recovery",
]
