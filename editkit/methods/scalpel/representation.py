"""SCALPEL's optional representation term (``lambda_repr``): the answer classes' share of the residual stream.

The output-level loss can be met by tilting the answer tokens while the judgement stays readable in the hidden
states (issue 26: the demo's moral edit kept a probe AUC of 0.94). This term acts on the representation instead:
at the last prompt token of the fit's own triplets, at a few middle layers, the between-class share of the
frame-centred residual stream, S_B / S_T (S_T detached), is pushed to 0 — LEACE's condition (Belrose et al.
2023): when the class means coincide, no linear probe reads the class. The batch gives the statistics; classes are
the correct answers, frames the items' ``frame`` column (each frame centred on its own mean, as the erase method
and the probe check do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from editkit.localize.class_stats import class_scatter


def repr_layers(n_layers: int, fracs: Sequence[float]) -> list[int]:
    """The decoder layers whose input (the residual stream after ``l`` layers) the term reads."""
    return sorted({min(n_layers - 1, max(1, math.floor(f * n_layers))) for f in fracs})


class ResidualCapture:
    """Forward pre-hooks that keep each listed decoder layer's input while ``with`` is open."""

    def __init__(self, decoder_layers: Sequence[torch.nn.Module]):
        self.layers = list(decoder_layers)
        self.got: list[torch.Tensor] = []
        self._handles: list = []

    def __enter__(self) -> ResidualCapture:
        self.got = []

        def pre(mod, args, kwargs):
            self.got.append(args[0] if args else kwargs["hidden_states"])

        self._handles = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in self.layers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def between_class_share(h: torch.Tensor, classes: Sequence[str], frames: Sequence[str]) -> torch.Tensor:
    """S_B / S_T of ``h`` [n, hidden] (:func:`editkit.localize.class_stats.class_scatter`; differentiable in
    S_B, S_T detached): 0 when the class means coincide within every frame; a batch with one class gives 0."""
    h = h.float()
    try:
        s_b, s_t = class_scatter(h, frames, classes)
    except ValueError:  # fewer than two classes in the batch: nothing to separate
        return h.new_zeros(())
    return (s_b / s_t.detach().clamp_min(1e-12)).to(h.dtype)


def prompt_ends(answer_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the position of the last prompt token (the one before the answer's first)."""
    first = answer_mask.int().argmax(dim=1)
    return first - 1


def representation_term(
    captured: list[torch.Tensor], rows: int, ends: torch.Tensor, classes, frames
) -> torch.Tensor:
    """The mean over the captured layers of the between-class share at the last prompt token of the first
    ``rows`` rows (the batch's prompts; the rows after them repeat the same prompts with the other answer)."""
    terms = []
    for h in captured:
        idx = torch.arange(rows, device=h.device)
        terms.append(between_class_share(h[idx, ends[:rows].to(h.device)], classes, frames))
    return torch.stack(terms).mean()
