"""Attribution of MLP neurons (the inputs of down_proj) to the gold answer.

Every neuron j of layer l gets a multiplicative gate g_lj (1 = the model as it is). The attribution of a
neuron is the integrated gradient of F (the gold answer's probability or log-probability) along the
straight path that scales its activation from 0 to its value:

    IG_lj = ∫₀¹ ∂F/∂g_lj (α) dα  ≈  (1/m) Σ_k ∂F/∂g_lj (α_k),   α_k = (k + ½)/m

and ∂F/∂g_lj at g = 1 is activation × gradient (``act_x_grad``, the one-step version). Because each batch
row has its own gates, the m path points of several samples run as one forward/backward.

``scope="joint"`` scales every layer's neurons together (m rows per sample; Σ IG ≈ F(1) − F(all MLP
neurons off)); ``scope="layer"`` scales one layer at a time with the others intact, the knowledge-neuron
convention (L·m rows per sample; per layer Σ IG ≈ F(1) − F(that layer off)).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from editkit.eval.pairwise import encode_prompt_answers, mean_answer_logprob
from editkit.localize.layer_hooks import LayerPreHooks

ALL_LAYERS = -1


class NeuronGates(LayerPreHooks):
    """Context manager: pre-hooks on every down_proj multiplying its input by per-row gates [rows, I]."""

    role = "down"

    def __init__(self, model, anatomy):
        super().__init__(model, anatomy)
        self.gates: list[torch.Tensor | None] = [None] * anatomy.n_layers

    def _hook(self, layer: int):
        def pre(mod, args):
            g = self.gates[layer]
            if g is None:
                return None
            x = args[0]
            g = g.to(device=x.device, dtype=x.dtype)
            return (x * g.view(g.shape[0], *([1] * (x.dim() - 2)), g.shape[-1]),) + tuple(args[1:])

        return pre

    def _reset(self) -> None:
        self.gates = [None] * self.anatomy.n_layers


def answer_objective(model, batch: Mapping[str, torch.Tensor], target: str) -> torch.Tensor:
    """F per row: mean gold-token log-prob, or its exp (the geometric-mean token probability)."""
    lp = mean_answer_logprob(model, batch)
    if target == "logprob":
        return lp
    if target == "prob":
        return lp.exp()
    raise ValueError(f"unknown attribution target '{target}' (prob or logprob)")


def neuron_attributions(
    model,
    tokenizer,
    anatomy,
    items: Sequence[Mapping],
    method: str = "ig",
    steps: int = 20,
    target: str = "prob",
    scope: str = "joint",
    batch_rows: int = 64,
    max_length: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Attribution of every MLP neuron for every item → [n_items, n_layers, intermediate] (fp32, CPU)."""
    if method not in ("ig", "act_x_grad"):
        raise ValueError(f"unknown attribution '{method}' (ig or act_x_grad)")
    if scope not in ("joint", "layer"):
        raise ValueError(f"unknown attribution scope '{scope}' (joint or layer)")
    L, n_neurons = anatomy.n_layers, anatomy.intermediate_size
    m = 1 if method == "act_x_grad" else steps
    alphas = [1.0] if method == "act_x_grad" else [(k + 0.5) / m for k in range(m)]
    scaled = [ALL_LAYERS] if (scope == "joint" or method == "act_x_grad") else list(range(L))
    # one row per (item, scaled layer, path point)
    rows = [(i, s, a) for i in range(len(items)) for s in scaled for a in alphas]
    enc = encode_prompt_answers(
        tokenizer, [it["prompt"] for it in items], [it["correct"] for it in items], max_length=max_length
    )
    out = torch.zeros(len(items), L, n_neurons, dtype=torch.float32)
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with NeuronGates(model, anatomy) as ng, torch.enable_grad():
            for start in range(0, len(rows), batch_rows):
                chunk = rows[start : start + batch_rows]
                idx = torch.tensor([r[0] for r in chunk])
                batch = {k: v[idx] for k, v in enc.items()}
                gates = []
                for li in range(L):
                    col = torch.tensor([a if s in (ALL_LAYERS, li) else 1.0 for _, s, a in chunk])
                    gates.append(col.unsqueeze(1).expand(len(chunk), n_neurons).clone().requires_grad_(True))
                ng.gates = list(gates)
                objective = answer_objective(model, batch, target)
                objective.sum().backward()
                scaled_of_row = torch.tensor([s for _, s, _ in chunk])
                for li in range(L):
                    sel = (scaled_of_row == ALL_LAYERS) | (scaled_of_row == li)
                    g = gates[li].grad.float().cpu()
                    out[:, li].index_add_(0, idx[sel], g[sel] / m)
                if progress is not None:
                    progress(min(start + batch_rows, len(rows)), len(rows))
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    return out
