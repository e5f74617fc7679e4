"""`neurons`: erase (or scale) MLP neurons by their down_proj input column (exact and mergeable).

With an explicit ``neurons`` list the method just applies it. Otherwise it finds them by Commonality
Neuron Localisation (CNL, arXiv 2502.20992):

1. attribution of every MLP neuron on every sample (integrated gradients of the gold answer's
   probability over the neuron's activation, or activation × gradient);
2. per sample, keep the neurons above ``threshold`` × that sample's largest attribution (or its top-q);
3. per dataset, keep the neurons kept in at least ``min_share`` of its samples;
4. capability neurons = the neurons every dataset keeps (the commonality).

On a mixture of experts a neuron is (layer, expert, index): each expert's (and the shared expert's) down
projection inputs are attributed and erased one expert at a time (:func:`neuron_layout` lays a layer's
groups side by side), and the info says which experts hold the neurons and how often the routers pick those
experts on the target text and on general text.

Datasets: by default the sampled target train items are split into ``n_splits`` disjoint random parts,
each a "dataset" (so the overlap between them measures how stable the localisation is); with
``datasets: [a, b]`` the named ``data.sets`` (triplet files of the same capability) are the datasets.
"""

from __future__ import annotations

import itertools
import time

import torch

from editkit.edit.edit import Edit, ScaleInputs
from editkit.errors import EditkitError
from editkit.eval.routing import routing_shares
from editkit.localize.attribution import neuron_attributions, neuron_layout, neuron_width
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.neurons.params import NeuronsParams
from editkit.methods.neurons.report import NeuronsReport
from editkit.run.distributed import gather_shares


def unit_of(anatomy, layer: int, j: int) -> tuple[str, str, int]:
    """(group label, down-projection target, column) of neuron ``j`` of ``layer`` in :func:`neuron_layout`'s
    columns (``mlp`` on a dense layer; ``e3``, ``shared`` on a MoE layer)."""
    for label, target, off, width in neuron_layout(anatomy)[layer]:
        if off <= j < off + width:
            return label, target, j - off
    raise IndexError(f"neuron {j} out of range for layer {layer}")


def flat_neuron(anatomy, spec: tuple) -> tuple[int, int]:
    """A recipe's neuron ([layer, index], or [layer, expert, index] on a MoE layer) → (layer, column).
    EditkitError (one line, naming the neuron) when the model has no such neuron."""
    n_layers = anatomy.n_layers
    layer = spec[0]
    if not 0 <= layer < n_layers:
        raise EditkitError(f"method.neurons: {list(spec)} is out of range for this model ({n_layers} layers)")
    groups = neuron_layout(anatomy)[layer]
    moe = anatomy.layer(layer).is_moe
    if len(spec) == 2 and not moe:
        j, width = spec[1], groups[0][3]
        if not 0 <= j < width:
            raise EditkitError(
                f"method.neurons: {list(spec)} is out of range for this model ({n_layers} layers x {width} neurons)"
            )
        return layer, j
    if len(spec) == 2:
        raise EditkitError(
            f"method.neurons: {list(spec)}: layer {layer} is a mixture of experts; name its neurons "
            f"[layer, expert, index] (expert 0..{anatomy.n_experts - 1} or 'shared')"
        )
    if not moe:
        raise EditkitError(f"method.neurons: {list(spec)} names an expert, but layer {layer} has no experts")
    label = "shared" if spec[1] == "shared" else f"e{spec[1]}"
    group = next((g for g in groups if g[0] == label), None)
    if group is None or not 0 <= spec[2] < group[3]:
        raise EditkitError(
            f"method.neurons: {list(spec)} is out of range for this model (layer {layer}: experts "
            f"0..{anatomy.n_experts - 1} x {anatomy.expert_intermediate_size} neurons"
            + (", shared" if groups[0][0] == "shared" else "")
            + ")"
        )
    return layer, group[2] + spec[2]


def neuron_edit(
    anatomy, neurons: list[tuple[int, int]], scale: float = 0.0, info: dict | None = None
) -> Edit:
    """ScaleInputs on each down projection (each expert's on a MoE) holding some of ``neurons``
    ((layer, column) pairs in :func:`neuron_layout`'s columns)."""
    by_target: dict[tuple[int, str], list[int]] = {}
    for layer, j in neurons:
        _, target, col = unit_of(anatomy, layer, int(j))
        by_target.setdefault((layer, target), []).append(col)
    ops = [
        ScaleInputs(module=target, index=sorted(cols), factor=scale)
        for (_, target), cols in sorted(by_target.items(), key=lambda kv: (kv[0][0], _group_order(kv[0][1])))
    ]
    more = {"neuron_units": _units(anatomy, neurons)} if anatomy.is_moe else {}
    return Edit(
        method="neurons", ops=ops, info={"neurons": [list(n) for n in neurons], **more, **(info or {})}
    )


def _group_order(target: str) -> tuple[int, str]:
    parts = target.split(".")
    return (int(parts[-2]), target) if parts[-2].isdigit() else (-1, target)


def _units(anatomy, neurons) -> list[list]:
    """(layer, expert, index) of each neuron: expert an int, 'shared', or 'mlp' for a dense layer."""
    out = []
    for layer, j in neurons:
        label, _, col = unit_of(anatomy, layer, int(j))
        out.append([layer, int(label[1:]) if label.startswith("e") else label, col])
    return out


def expert_summary(ctx: FitContext, neurons: list[tuple[int, int]], items: list[dict]) -> list[dict]:
    """Which experts hold the neurons, and how often the routers pick each of them (share of tokens) on the
    target items and on general text, with the model as it is (the base model during the fit)."""
    an = ctx.anatomy
    held: dict[tuple[int, str], int] = {}
    for layer, j in neurons:
        label = unit_of(an, layer, int(j))[0]
        held[(layer, label)] = held.get((layer, label), 0) + 1
    texts = {"target": [f"{t['prompt']}{t['correct']}" for t in items[:32]]}
    general = [t for t in (ctx.data.get("general_train") or []) if t and t.strip()][:32]
    if general:
        texts["general"] = general
    shares = {k: routing_shares(ctx.model, ctx.tokenizer, an, v) for k, v in texts.items()}
    rows = []
    for (layer, label), n in sorted(held.items(), key=lambda kv: (kv[0][0], _label_order(kv[0][1]))):
        row: dict = {
            "layer": layer,
            "expert": int(label[1:]) if label.startswith("e") else label,
            "neurons": n,
        }
        for k, sh in shares.items():
            if label.startswith("e") and layer in sh["layers"]:
                row[f"pick_{k}"] = sh["shares"][sh["layers"].index(layer)][int(label[1:])]
            else:  # a shared expert (or dense MLP) sees every token
                row[f"pick_{k}"] = 1.0
        rows.append(row)
    return rows


def _label_order(label: str) -> int:
    return int(label[1:]) if label.startswith("e") else -1


def kept_per_sample(attr: torch.Tensor, threshold: float, top_q: int | None) -> torch.Tensor:
    """[samples, L, I] attributions → bool, the neurons each sample keeps."""
    flat = attr.flatten(1)
    if top_q is not None:
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep.scatter_(1, flat.topk(min(top_q, flat.shape[1]), dim=1).indices, True)
    else:
        peak = flat.max(dim=1, keepdim=True).values
        keep = (flat > threshold * peak) & (peak > 0)
    return keep.view_as(attr)


def dataset_neurons(keep: torch.Tensor, min_share: float) -> set[tuple[int, int]]:
    """Neurons kept by at least ``min_share`` of the samples ([samples, L, I] bool)."""
    share = keep.float().mean(dim=0)
    return {(int(li), int(j)) for li, j in (share >= min_share - 1e-9).nonzero().tolist()}


def overlap_stats(a: set, b: set) -> dict:
    inter, union = len(a & b), len(a | b)
    return {
        "n_a": len(a),
        "n_b": len(b),
        "intersection": inter,
        "overlap_rate": round(inter / len(a), 6) if a else 0.0,  # |A∩B| / |A| (CNL's measure)
        "iou": round(inter / union, 6) if union else 0.0,
    }


def _attribute_sets(
    ctx: FitContext, p: NeuronsParams, sets: dict[str, list[dict]], total: int
) -> tuple[dict[str, set[tuple[int, int]]], torch.Tensor]:
    """Per dataset: the neurons kept by at least ``min_share`` of its samples; and the summed attributions."""
    an = ctx.anatomy
    per_set: dict[str, set[tuple[int, int]]] = {}
    attr_sum = torch.zeros(an.n_layers, neuron_width(an))
    done = 0
    for name, items in sets.items():

        def attr_of(share: list[dict], base: int = done) -> torch.Tensor:  # this process's samples
            return neuron_attributions(
                ctx.model,
                ctx.tokenizer,
                an,
                share,
                method=p.attribution,
                steps=p.steps,
                target=p.target,
                scope=p.scope,
                batch_rows=p.batch_rows,
                max_length=p.max_length,
                progress=lambda d, t: ctx.events.progress("fit", base + round(len(share) * d / t), total),
            )

        attr = torch.cat(gather_shares(attr_of, items))  # samples split over processes, rows in order
        done += len(items)
        keep = kept_per_sample(attr, p.threshold, p.top_q)
        per_set[name] = dataset_neurons(keep, p.min_share)
        attr_sum += attr.sum(dim=0)
        ctx.events.log(
            f"neurons: {name}: {len(per_set[name])} neurons kept in >= {p.min_share:.0%} of "
            f"{len(items)} samples (mean {keep.flatten(1).sum(1).float().mean():.1f} kept per sample)"
        )
    return per_set, attr_sum


class NeuronsMethod(Method):
    name = "neurons"
    params_cls = NeuronsParams
    paper = "Commonality Neuron Localisation (CNL, arXiv 2502.20992)"
    summary = "capability neurons common to several datasets, erased at the down_proj input"
    report = NeuronsReport
    moe = (
        "a neuron is (layer, expert, index): every expert's (and the shared expert's) down-projection inputs "
        "are attributed — an expert's gate acts on the tokens its router sends it — and erased in that "
        "expert's slice of the fused tensor; explicit `neurons` are `[layer, expert, index]` (expert: its "
        "index or `shared`); the card lists the experts holding the neurons and how often their router picks "
        "them on target vs general text; the control draws as many random neurons from the same experts"
    )

    def _datasets(self, ctx: FitContext, p: NeuronsParams) -> dict[str, list[dict]]:
        if p.datasets is not None:
            out = {}
            for name in p.datasets:
                rows = ctx.data.get(name)
                if not rows:
                    raise EditkitError(f"method.datasets: '{name}' is not a data.sets entry of this recipe")
                missing = [k for k in ("prompt", "correct") if k not in rows[0]]
                if missing:
                    raise EditkitError(f"data.sets.{name}: rows need {', '.join(missing)} (triplets)")
                out[name] = ctx.rng(f"neurons-{name}").sample(list(rows), min(p.samples, len(rows)))
            return out
        train = list(ctx.data.get("target_train") or [])
        if len(train) < p.n_splits:
            raise EditkitError(
                f"method.neurons: neuron discovery needs at least {p.n_splits} target train items (data.target)"
            )
        sample = ctx.rng("neurons-items").sample(train, min(p.samples, len(train)))
        return {
            f"half{i}" if p.n_splits == 2 else f"part{i}": sample[i :: p.n_splits] for i in range(p.n_splits)
        }

    def check_data(self, params, sets: set[str]) -> None:
        for name in params.datasets or []:
            if name not in sets:
                raise EditkitError(f"method.datasets: '{name}' is not a data.sets entry of this recipe")

    def check(self, params: NeuronsParams, anatomy) -> None:
        for spec in params.neurons or []:
            flat_neuron(anatomy, tuple(spec))

    def fit(self, ctx: FitContext) -> FitResult:
        p: NeuronsParams = ctx.params  # type: ignore[assignment]
        an = ctx.anatomy
        self.check(p, an)
        if p.neurons is not None:
            return FitResult(neuron_edit(an, [flat_neuron(an, tuple(n)) for n in p.neurons], p.scale))

        sets = self._datasets(ctx, p)
        total = sum(len(v) for v in sets.values())
        ctx.events.log(
            f"neurons: {p.attribution} attribution ({p.scope}, m={p.steps}) on {total} samples in "
            f"{len(sets)} datasets ({', '.join(f'{k}: {len(v)}' for k, v in sets.items())})"
        )
        t0 = time.time()
        per_set, attr_sum = _attribute_sets(ctx, p, sets, total)
        seconds = time.time() - t0
        common = set.intersection(*per_set.values())
        pairs = {
            f"{a}~{b}": overlap_stats(per_set[a], per_set[b]) for a, b in itertools.permutations(per_set, 2)
        }
        mean_attr = attr_sum / total
        ranked = sorted(common, key=lambda n: -float(mean_attr[n]))
        chosen = sorted(ranked[: p.max_neurons])
        if not chosen:
            raise EditkitError(
                "method.neurons: no neuron is common to all datasets; lower threshold or min_share "
                f"(per dataset: {', '.join(f'{k}={len(v)}' for k, v in per_set.items())})"
            )
        if len(common) > p.max_neurons:
            ctx.events.log(
                f"neurons: {len(common)} common neurons, capped to max_neurons={p.max_neurons}",
                level="warning",
            )
        by_layer = [0] * an.n_layers
        for li, _ in chosen:
            by_layer[li] += 1
        ctx.events.emit(
            "heatmap",
            name="neurons_per_layer",
            values=[[float(c)] for c in by_layer],
            xlabel="count",
            ylabel="layer",
            title=f"capability neurons per layer ({len(chosen)})",
        )
        ctx.events.log(f"neurons: {len(chosen)} capability neurons in {seconds:.1f}s; overlaps {pairs}")
        info = {
            "attribution": p.attribution,
            "scope": p.scope,
            "steps": p.steps if p.attribution == "ig" else 1,
            "target": p.target,
            "selection": f"top-{p.top_q} per sample" if p.top_q else f"> {p.threshold} x sample max",
            "min_share": p.min_share,
            "datasets": {k: len(v) for k, v in sets.items()},
            "per_dataset": {k: len(v) for k, v in per_set.items()},
            "n_common": len(common),
            "n_chosen": len(chosen),
            "overlap": pairs,
            "per_layer": by_layer,
            "attribution_seconds": round(seconds, 2),
            "mean_attribution": [round(float(mean_attr[n]), 8) for n in chosen],
        }
        if an.is_moe:
            info["experts"] = expert_summary(ctx, chosen, [it for v in sets.values() for it in v])
        return FitResult(neuron_edit(an, chosen, p.scale, info=info))

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """Random neurons, as many per layer as the edit has (layer-matched: depth is not a confound); on a
        MoE as many per expert (expert-matched: how often the router picks it is not a confound)."""
        chosen = {tuple(n) for n in edit.info.get("neurons", [])}
        layout = neuron_layout(ctx.anatomy)
        per_group: dict[tuple[int, int], int] = {}  # (layer, group index) -> count
        for li, j in chosen:
            gi = next(i for i, g in enumerate(layout[li]) if g[2] <= j < g[2] + g[3])
            per_group[(li, gi)] = per_group.get((li, gi), 0) + 1
        rng = ctx.rng("neurons-control")
        pick: list[tuple[int, int]] = []
        for (li, gi), n in sorted(per_group.items()):
            _, _, off, width = layout[li][gi]
            pool = [j for j in range(off, off + width) if (li, j) not in chosen]
            pick += [(li, j) for j in sorted(rng.sample(pool, min(n, len(pool))))]
        p: NeuronsParams = ctx.params  # type: ignore[assignment]
        what = "expert" if ctx.anatomy.is_moe else "layer"
        return neuron_edit(
            ctx.anatomy, pick, p.scale, info={"control": f"random neurons, same count per {what}"}
        )
