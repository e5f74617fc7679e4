"""Keep harmless activations where they were: a writer's update restricted to the null space of its
harmless inputs (AlphaEdit, Fang et al. 2025, arXiv 2410.02355, applied to a projection edit).

For a residual writer W ([out, in]) the projection edit is ΔW = −s·r·(Wᵀr)ᵀ. With K the writer's inputs on
harmless prompts (every token position, chat template), U ([in, k]) the top principal subspace of KKᵀ that
holds a fraction ``energy`` of its trace, the constrained update is

    ΔW' = −s·r·vᵀ,  v = (I − U·Uᵀ)·Wᵀr,

so ΔW'·x = 0 for every x in span(U): what harmless prompts feed this writer comes out (nearly) unchanged,
and only input directions harmless prompts do not use carry the ablation.
"""

from __future__ import annotations

import torch

from editkit.eval.forward import with_positions
from editkit.eval.refusal.chat import by_length, chat_prompts, encode_left
from editkit.model.targets import target_module


@torch.no_grad()
def writer_inputs(model, tokenizer, prompts: list[str], modules: list[str], batch_size: int = 16):
    """{module: [n_tokens, in] float32}: every non-padding token's input to each named module."""
    texts = chat_prompts(tokenizer, prompts)
    dev = next(model.parameters()).device
    rows: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
    mask: list[torch.Tensor] = []

    def grab(name):
        def pre(mod, args):
            x = args[0]
            rows[name].append(x.detach().to(torch.float32).reshape(-1, x.shape[-1])[mask[-1]].cpu())

        return pre

    handles = [target_module(model, m).register_forward_pre_hook(grab(m)) for m in modules]
    try:
        for idx in by_length(tokenizer, texts, batch_size):
            enc = encode_left(tokenizer, [texts[i] for i in idx], dev)
            mask.append(enc["attention_mask"].reshape(-1).bool().cpu())
            model(**with_positions(enc), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {m: torch.cat(v) for m, v in rows.items()}


def principal_subspace(x: torch.Tensor, energy: float) -> torch.Tensor:
    """Orthonormal U [in, k]: the top eigenvectors of xᵀx (uncentred, as AlphaEdit) holding ``energy`` of its
    trace (1.0: every direction with a non-negligible eigenvalue). Computed through the [n, n] Gram matrix."""
    x64 = x.double()
    gram = x64 @ x64.T
    lam, vec = torch.linalg.eigh(gram)  # ascending
    lam, vec = lam.flip(0), vec.flip(1)
    keep = lam > lam[0].clamp_min(0) * 1e-10
    lam, vec = lam[keep], vec[:, keep]
    share = torch.cumsum(lam, 0) / lam.sum()
    k = int(torch.searchsorted(share, torch.tensor(energy, dtype=share.dtype) - 1e-12).item()) + 1
    k = min(k, lam.numel())
    u = x64.T @ (vec[:, :k] / lam[:k].sqrt())
    q, _ = torch.linalg.qr(u)  # re-orthonormalise (rounding)
    return q.to(torch.float32).contiguous()


def null_space_update(w: torch.Tensor, r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v = (I − U·Uᵀ)·Wᵀr (float64 math, float32 out): the projection's row with the harmless subspace off."""
    r64 = r.double() / r.double().norm()
    v = w.double().T @ r64
    u64 = u.double()
    return (v - u64 @ (u64.T @ v)).to(torch.float32)
