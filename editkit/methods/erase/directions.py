"""The residual stream at the capability's prompts and the directions that separate its classes (the class
statistics themselves are in :mod:`editkit.localize.class_stats`).

A linear probe can separate two classes at a layer exactly when their class-conditional means differ there
(Belrose et al. 2023, LEACE: equal class means ⇔ no linear classifier beats a constant, for every loss). Removing
the span of the class-mean deviations from the residual stream is therefore the whole linear-erasure condition;
LEACE's whitened projection is the *least-squares-smallest* map that meets it, the orthogonal projection used
here is the one that can be merged into the residual writers exactly (W ← (I − R Rᵀ) W).

The statistics are taken at the last prompt token of the capability's train triplets in every train frame.
Each frame is centred on its own mean first (frames differ in wording, not in class), then the class means of
the centred activations span the directions a probe could use; their top eigenvectors (weighted by class size,
i.e. the between-class scatter) are the erased directions. Sums are float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from editkit.eval.forward import model_device


class _Stop(Exception):
    """Raised by the last capturing hook: the layers above the deepest estimated one are not needed."""


@torch.no_grad()
def prompt_activations(
    model,
    tokenizer,
    decoder_layers: Sequence[torch.nn.Module],
    prompts: Sequence[str],
    layers: Sequence[int],
    positions: int = 1,
    batch_size: int = 16,
) -> torch.Tensor:
    """[n_prompts, len(layers), hidden] float64: the residual stream entering each decoder layer in ``layers``,
    averaged over the last ``positions`` prompt tokens (tokenised as pairwise scoring does, with special
    tokens; right-padded, so positions need no correction). The forward stops after the deepest layer."""
    dev = model_device(model)
    want = sorted(set(layers))
    slot = {li: k for k, li in enumerate(layers)}
    ids = [list(tokenizer(p, add_special_tokens=True)["input_ids"]) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    hidden = model.config.get_text_config().hidden_size
    out = torch.empty(len(prompts), len(layers), hidden, dtype=torch.float64)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(ids[i]) for i in idx)
        x = torch.full((len(idx), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, : len(ids[i])] = torch.tensor(ids[i])
            mask[r, : len(ids[i])] = 1
        lengths = mask.sum(1)
        got: dict[int, torch.Tensor] = {}

        def capture(li, lengths=lengths, got=got):
            def pre(mod, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                rows = []
                for r, n in enumerate(lengths.tolist()):
                    k = min(positions, n)
                    rows.append(h[r, n - k : n].to(torch.float64).mean(0))
                got[li] = torch.stack(rows).cpu()
                if li == want[-1]:
                    raise _Stop

            return pre

        handles = [decoder_layers[li].register_forward_pre_hook(capture(li), with_kwargs=True) for li in want]
        try:
            model(input_ids=x.to(dev), attention_mask=mask.to(dev), use_cache=False)
        except _Stop:
            pass
        finally:
            for h in handles:
                h.remove()
        for li in layers:
            out[idx, slot[li]] = got[li]
    return out


def top_directions(deviations: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(unit directions [k, hidden], share of the between-class scatter each one carries [k]), k ≤ rank."""
    _, s, vh = torch.linalg.svd(deviations, full_matrices=False)
    energy = s**2
    total = float(energy.sum())
    keep = [j for j in range(min(rank, len(s))) if total > 0 and energy[j] > 1e-12 * total]
    return vh[keep], (energy[keep] / total if total > 0 else energy[keep])


def orthonormal_extend(basis: torch.Tensor | None, new: torch.Tensor, tol: float = 1e-3) -> torch.Tensor:
    """Append the rows of ``new`` to the orthonormal rows of ``basis`` (Gram-Schmidt, twice for stability);
    a row whose part outside the basis is shorter than ``tol`` is dropped."""
    rows = [] if basis is None else list(basis)
    for v in new:
        v = v.to(torch.float64).clone()
        v = v / v.norm().clamp_min(1e-30)
        for _ in range(2):
            for b in rows:
                v = v - (v @ b) * b
        n = float(v.norm())
        if n > tol:
            rows.append(v / n)
    if not rows:
        return torch.zeros(0, new.shape[-1], dtype=torch.float64)
    return torch.stack(rows)
