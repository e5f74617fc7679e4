"""Attribution of MLP neurons (the inputs of down_proj) to the gold answer.

Every neuron j of layer l gets a multiplicative gate g_lj (1 = the model as it is). The attribution of a
neuron is the integrated gradient of F (the gold answer's probability or log-probability) along the
straight path that scales its activation from 0 to its value:

    IG_lj = ∫₀¹ ∂F/∂g_lj (α) dα  ≈  (1/m) Σ_k ∂F/∂g_lj (α_k),   α_k = (k + ½)/m

and ∂F/∂g_lj at g = 1 is activation × gradient (``act_x_grad``, the one-step version). Because each batch
row has its own gates, the m path points of several samples run as one forward/backward.

On a mixture of experts the neurons of a layer are those of its experts (and shared expert), side by side:
:func:`neuron_layout` gives each group's columns, and an expert's gate acts on the tokens routed to it (each
batch row keeps its own gates, so the path points still run as one forward/backward).

``scope="joint"`` scales every layer's neurons together (m rows per sample; Σ IG ≈ F(1) − F(all MLP
neurons off)); ``scope="layer"`` scales one layer at a time with the others intact, the knowledge-neuron
convention (L·m rows per sample; per layer Σ IG ≈ F(1) − F(that layer off)).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from editkit.eval.pairwise import encode_prompt_answers, mean_answer_logprob
from editkit.localize.layer_hooks import LayerPreHooks
from editkit.model.moe import ExpertDown

ALL_LAYERS = -1

#: one group of a layer's MLP neurons: (label, down-projection target, first column, width)
NeuronGroup = tuple[str, str, int, int]


def neuron_layout(anatomy) -> list[list[NeuronGroup]]:
    """Per layer, its neuron groups laid side by side: the dense MLP (``mlp``: columns 0..I-1, as before),
    or a MoE layer's shared expert (``shared``) and experts ``e0``, ``e1``, ... one after the other."""
    out = []
    for li in range(anatomy.n_layers):
        groups, off = [], 0
        for label, target, width in anatomy.neuron_groups(li):
            groups.append((label, target, off, width))
            off += width
        out.append(groups)
    return out


def neuron_width(anatomy) -> int:
    """Columns of the per-layer attribution (the widest layer's neurons)."""
    return max(g[2] + g[3] for groups in neuron_layout(anatomy) for g in groups)


class NeuronGates(LayerPreHooks):
    """Context manager: pre-hooks on every down projection (each expert's, on a MoE) multiplying its input by
    per-row gates: ``gates[layer]`` is [rows, neuron_width], each group reading its own columns."""

    role = "down"

    def __init__(self, model, anatomy):
        super().__init__(model, anatomy)
        self.gates: list[torch.Tensor | None] = [None] * anatomy.n_layers
        self.layout = neuron_layout(anatomy)

    def __enter__(self):
        for li, groups in enumerate(self.layout):
            for _, target, off, width in groups:
                mod = self.anatomy.module(target)
                self._handles.append(mod.register_forward_pre_hook(self._hook(li, off, width)))
        return self

    def _hook(self, layer: int, off: int = 0, width: int | None = None):
        def pre(mod, args):
            g = self.gates[layer]
            if g is None:
                return None
            x = args[0]
            g = g[:, off : off + (width or g.shape[1])].to(device=x.device, dtype=x.dtype)
            if isinstance(mod, ExpertDown):  # this expert's tokens of the flattened [rows × seq] batch
                return (x * g[mod.token_index // (mod.n_tokens // g.shape[0])],) + tuple(args[1:])
            if x.dim() == 2 and x.shape[0] != g.shape[0]:  # a MoE block's shared expert: tokens flattened
                return (x * g.repeat_interleave(x.shape[0] // g.shape[0], dim=0),) + tuple(args[1:])
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
    """Attribution of every MLP neuron for every item → [n_items, n_layers, width] (fp32, CPU); columns as
    :func:`neuron_layout` lays them out (the MLP width on a dense model)."""
    if method not in ("ig", "act_x_grad"):
        raise ValueError(f"unknown attribution '{method}' (ig or act_x_grad)")
    if scope not in ("joint", "layer"):
        raise ValueError(f"unknown attribution scope '{scope}' (joint or layer)")
    L, n_neurons = anatomy.n_layers, neuron_width(anatomy)
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
