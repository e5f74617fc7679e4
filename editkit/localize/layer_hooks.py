"""Per-layer forward pre-hooks on one anatomy role, installed for the length of a ``with`` block."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar


class LayerPreHooks:
    """Base of the per-row knockout/gating context managers (heads at o_proj, neurons at down_proj)."""

    role: ClassVar[str]  # anatomy role whose input is hooked: "o" or "down"

    def __init__(self, model, anatomy):
        self.model = model
        self.anatomy = anatomy
        self._handles: list = []

    def _hook(self, layer: int) -> Callable:
        raise NotImplementedError

    def _reset(self) -> None:
        """Back to 'no effect' when the block ends."""

    def __enter__(self):
        for li in range(self.anatomy.n_layers):
            mod = self.model.get_submodule(getattr(self.anatomy.layer(li), self.role))
            self._handles.append(mod.register_forward_pre_hook(self._hook(li)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._reset()
