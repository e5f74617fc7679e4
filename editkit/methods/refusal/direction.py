"""Residual activations at the end of the prompt, and difference-of-means directions per layer.

``hidden_states[l]`` is the residual stream entering decoder layer ``l`` (``l = 0`` is the embedding
output), which is what every later layer reads; a direction found there is removed by orthogonalising the
writers of all layers (Arditi et al. 2024). Sums are accumulated in float64 so 128 prompts of a 576-wide
model give the same direction on any machine.
"""

from __future__ import annotations

import torch

from editkit.eval.forward import last_only, with_positions
from editkit.eval.refusal.chat import by_length, chat_prompts, encode_left
from editkit.run.distributed import gather_shares


@torch.no_grad()
def residual_activations(
    model, tokenizer, prompts: list[str], n_positions: int = 1, batch_size: int = 16, chat: bool = True
) -> torch.Tensor:
    """[n_prompts, n_layers, hidden] float64: residual stream entering each layer, averaged over the
    last ``n_positions`` prompt tokens (left padding keeps them at the end)."""
    texts = chat_prompts(tokenizer, prompts) if chat else list(prompts)
    dev = next(model.parameters()).device
    n_layers = model.config.get_text_config().num_hidden_layers

    def acts(share: list[str]) -> torch.Tensor:  # this process's share of the prompts (all of them in one)
        rows = torch.empty(
            len(share), n_layers, model.config.get_text_config().hidden_size, dtype=torch.float64
        )
        for idx in by_length(tokenizer, share, batch_size):
            enc = encode_left(tokenizer, [share[i] for i in idx], dev)
            out = model(**with_positions(enc), output_hidden_states=True, use_cache=False, **last_only(model))
            # the last positions of each layer only (stacking every position copies [b, L, T, H])
            hs = torch.stack([h[:, -n_positions:, :] for h in out.hidden_states[:n_layers]], dim=1)
            rows[idx] = hs.to(torch.float64).mean(dim=2).cpu()
        return rows

    return torch.cat(gather_shares(acts, texts))


def winsorize(acts: torch.Tensor, quantile: float) -> torch.Tensor:
    """Clip every coordinate (per layer) to its [q, 1−q] quantiles over prompts: a few outlier prompts
    (massive activations) should not steer the mean."""
    if quantile <= 0:
        return acts
    lo = torch.quantile(acts, quantile, dim=0, keepdim=True)
    hi = torch.quantile(acts, 1 - quantile, dim=0, keepdim=True)
    return torch.maximum(torch.minimum(acts, hi), lo)


def diff_of_means(
    pos: torch.Tensor, neg: torch.Tensor, project_off_neg_mean: bool = False, winsorize_q: float = 0.0
) -> torch.Tensor:
    """Unit directions normalise(mean(pos) − mean(neg)) per layer: [L, H] float64.

    With ``project_off_neg_mean`` the component along the (unit) negative mean is removed first, so the
    direction does not also shrink the ordinary activation magnitude.
    """
    pos, neg = winsorize(pos.double(), winsorize_q), winsorize(neg.double(), winsorize_q)
    d = pos.mean(0) - neg.mean(0)
    if project_off_neg_mean:
        m = neg.mean(0)
        m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        d = d - (d * m).sum(-1, keepdim=True) * m
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def direction_at(dirs: torch.Tensor, index: float) -> torch.Tensor:
    """The direction at a fractional layer ``index`` of per-layer unit directions ``dirs`` [L, H]: linear
    interpolation between the two neighbouring layers' directions, renormalised (heretic's "global"
    direction). An integer index returns that layer's direction itself."""
    n = dirs.shape[0]
    if not 0 <= index <= n - 1:
        raise ValueError(f"direction index {index} is out of range 0..{n - 1}")
    lo = int(index // 1)
    frac = float(index) - lo
    if frac == 0.0:
        return dirs[lo]
    d = (1.0 - frac) * dirs[lo].double() + frac * dirs[lo + 1].double()
    return (d / d.norm().clamp_min(1e-12)).to(dirs.dtype)


def project_off(r: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Unit ``r`` with its component along ``m`` removed, renormalised (float64): a direction that no longer
    shrinks the ordinary activation ``m`` (e.g. the harmless mean of the layer it is removed from)."""
    r, m = r.double(), m.double()
    m = m / m.norm().clamp_min(1e-12)
    out = r - (r @ m) * m
    return out / out.norm().clamp_min(1e-12)
