"""Class-conditional statistics of the residual stream: which answer class each item is, each frame centred
on its own mean, the class-mean deviations (whose Gram is the between-class scatter) and the between-class share.

A linear probe can separate classes at a layer exactly when their class-conditional means differ there
(Belrose et al. 2023, LEACE). Used by the erase method (the directions it removes) and by SCALPEL's
representation term (the share it pushes to 0).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import torch


def class_labels(items: Sequence[Mapping], classes: str = "answer") -> list[str]:
    """Each item's class: its correct answer (``answer``) or which side of its sorted answer pair is correct."""
    out = []
    for it in items:
        c, w = str(it["correct"]).strip().lower(), str(it["incorrect"]).strip().lower()
        out.append(c if classes == "answer" else f"{min(c, w)}|{max(c, w)}|{int(c < w)}")
    return out


def frame_centred(acts: torch.Tensor, frames: Sequence[str]) -> torch.Tensor:
    """Subtract each frame's mean (acts: [n, hidden])."""
    out = acts.clone()
    groups: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(frames):
        groups[f].append(i)
    for rows in groups.values():
        out[rows] -= acts[rows].mean(0)
    return out


def class_mean_deviations(
    acts: torch.Tensor, frames: Sequence[str], labels: Sequence[str], min_items: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows √n_c·m_c [C, hidden], n_c [C]) of the frame-centred class means m_c: their Gram is the
    between-class scatter, so its right singular vectors are the directions a probe separates along."""
    centred = frame_centred(acts, frames)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(labels):
        groups[c].append(i)
    kept = [rows for rows in groups.values() if len(rows) >= min_items]
    if len(kept) < 2:
        raise ValueError("fewer than two classes with enough items to compare")
    n = torch.tensor([len(r) for r in kept], dtype=torch.float64)
    means = torch.stack([centred[r].mean(0) for r in kept])
    # re-centre on the (weighted) grand mean of the kept classes (a dropped class would otherwise shift it)
    means = means - (n[:, None] * means).sum(0) / n.sum()
    return means * n.sqrt()[:, None], n


def class_scatter(
    acts: torch.Tensor, frames: Sequence[str], labels: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(trace S_B, trace S_T) of the frame-centred ``acts`` [n, hidden], as tensors (differentiable): the
    between-class and the total scatter. Fewer than two classes: ValueError (from
    :func:`class_mean_deviations`)."""
    dev, _ = class_mean_deviations(acts, frames, labels)
    return dev.pow(2).sum(), frame_centred(acts, frames).pow(2).sum()


def separated_share(acts: torch.Tensor, frames: Sequence[str], labels: Sequence[str]) -> float:
    """Between-class share of the frame-centred variance (trace S_B / trace S_T): 0 = class means coincide."""
    s_b, s_t = class_scatter(acts, frames, labels)
    total = float(s_t)
    return float(s_b) / total if total > 0 else 0.0
