"""The PNGs of cards and runs: matplotlib ``Figure`` objects (no pyplot state), written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator


def integer_ticks(*axes) -> None:
    for a in axes:
        a.set_major_locator(MaxNLocator(integer=True))


def save(fig: Figure, path: Path) -> Path:
    """PNG written next to its final name, then renamed (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.stem, suffix=".png.tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def bar_per_layer(
    values: Sequence[float], path: Path, title: str, ylabel: str, color: str = "#3b6ea8"
) -> Path:
    """One bar per layer."""
    fig = Figure(figsize=(max(5.0, 0.22 * len(values) + 2), 3.2))
    ax = fig.add_subplot()
    ax.bar(range(len(values)), values, color=color)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-0.6, len(values) - 0.4)
    integer_ticks(ax.xaxis)
    fig.tight_layout()
    return save(fig, path)


def layer_head_heatmap(values, path: Path, title: str, chosen: Sequence[Sequence[int]] = ()) -> Path:
    """Layers × heads heatmap (red = negative = the capability needs the head), chosen heads boxed."""
    values = np.asarray(values, dtype=float)
    lim = float(np.abs(values).max()) or 1.0
    n_layers, n_heads = values.shape
    fig = Figure(figsize=(max(4.0, 0.45 * n_heads + 2), max(3.0, 0.22 * n_layers + 1)))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    for li, h in chosen:
        ax.add_patch(Rectangle((h - 0.5, li - 0.5), 1, 1, fill=False, edgecolor="black", lw=1.5))
    ax.set_xlabel("query head")
    ax.set_ylabel("layer")
    integer_ticks(ax.xaxis, ax.yaxis)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return save(fig, path)
