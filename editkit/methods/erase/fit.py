"""`erase`: remove the directions along which a capability's answer classes differ from the residual stream.

1. Activations: the residual stream entering each estimated layer at the last prompt token of every train
   triplet, in every train answer frame (``frame`` column).
2. Directions: centre each frame, take the class means (class = the correct answer), keep the top ``rank``
   eigenvectors of the between-class scatter per layer; the union over layers, orthonormalised.
3. Edit: ``ProjectOut`` of every direction on every residual writer of the edited layers (o_proj, down_proj;
   embeddings optional) — W ← (I − R Rᵀ) W, exact and mergeable, so the residual stream of the edited layers has
   no component along R at all and the class means there coincide along it (LEACE's condition, Belrose et al.
   2023, for the span it estimated).
4. ``rounds`` > 1: activations again with the edit applied, new directions from what still separates the
   classes, added to the basis (the edit is rebuilt from the whole basis each round).
"""

from __future__ import annotations

import torch

from editkit.data.capabilities import load_triplets
from editkit.edit.edit import Edit
from editkit.edit.ops import EditOp, ProjectOut
from editkit.errors import DataError, EditkitError
from editkit.eval.subsets import stratified_subset
from editkit.localize.class_stats import class_labels, class_mean_deviations, separated_share
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.erase.directions import orthonormal_extend, prompt_activations, top_directions
from editkit.methods.erase.params import EraseParams
from editkit.methods.erase.report import EraseReport


def estimate_layers(anatomy, p: EraseParams) -> list[int]:
    if p.layers is not None:
        return sorted(set(p.layers))
    return sorted({int(f * anatomy.n_layers) for f in p.layer_fracs})


def writer_modules(anatomy, p: EraseParams) -> list[str]:
    """The residual writers the edit orthogonalises, in layer order (embeddings first when asked)."""
    names = [anatomy.embed] if p.embeddings else []
    layers = range(anatomy.n_layers) if p.edit_layers is None else sorted(set(p.edit_layers))
    for li in layers:
        la = anatomy.layer(li)
        if "o" in p.writers:
            names.append(la.o)
        if "down" in p.writers:
            names += [n for n in (la.down, *la.expert_downs) if n]
    return names


def erase_edit(
    anatomy, basis: torch.Tensor, p: EraseParams, info: dict | None = None, method="erase"
) -> Edit:
    """One ``ProjectOut`` per (writer, direction): orthonormal rows compose to the projection I − R Rᵀ exactly."""
    ops: list[EditOp] = []
    rows = [r.to(torch.float32).contiguous() for r in basis]
    for name in writer_modules(anatomy, p):
        for r in rows:
            ops.append(ProjectOut(module=name, direction=r.clone(), strength=p.strength))
    return Edit(method=method, ops=ops, info=info or {})


def protected_basis(
    ctx: FitContext, p: EraseParams, decoder, layers: list[int]
) -> tuple[torch.Tensor | None, dict]:
    """Orthonormal rows spanning every protected capability's top class directions at every estimated layer
    (its train split, each frame centred, as for the target), and what each one contributed."""
    if not p.protect:
        return None, {}
    basis: torch.Tensor | None = None
    got: dict[str, int] = {}
    for name in p.protect:
        try:
            items = [dict(t) for t in load_triplets(name, split="train")]
        except DataError as e:
            raise EditkitError(f"method.protect: {e}") from None
        items = stratified_subset(items, p.max_items, ctx.seed)
        labels = class_labels(items, p.classes)
        if len(set(labels)) < 2:
            raise EditkitError(f"method.protect: '{name}' has a single answer class in its train split")
        frames = [str(t.get("frame", "main")) for t in items]
        a = prompt_activations(
            ctx.model, ctx.tokenizer, decoder, [t["prompt"] for t in items], layers, p.positions, p.batch_size
        )
        before = 0 if basis is None else len(basis)
        for k in range(len(layers)):
            dev, _ = class_mean_deviations(a[:, k], frames, labels, p.min_class_items)
            basis = orthonormal_extend(basis, top_directions(dev, p.protect_rank)[0])
        got[name] = len(basis) - before
    return basis, got


#: a class direction with more than this share of its squared norm in the protected span is dropped, not
#: renormalised (what is left of it is too little to be a direction of its own)
DROP_INSIDE = 0.95


def without(dirs: torch.Tensor, basis: torch.Tensor | None) -> tuple[torch.Tensor, list[float]]:
    """``dirs`` (unit rows) with their components in the span of ``basis`` removed, rows more than
    ``DROP_INSIDE`` inside it dropped; and the share of each row's squared norm that was in that span."""
    if basis is None or not len(basis):
        return dirs, [0.0] * len(dirs)
    inside = (dirs @ basis.T) @ basis
    share = (inside**2).sum(-1)
    rest = dirs - inside
    return rest[share <= DROP_INSIDE], [float(v) for v in share]


def _require_directions(basis: torch.Tensor | None, p: EraseParams) -> None:
    if basis is None or not len(basis):
        raise EditkitError(
            "method 'erase': every class direction lies in the protected capabilities' span "
            f"({', '.join(p.protect)}); nothing is left to erase"
        )


def train_items(ctx: FitContext, p: EraseParams) -> list[dict]:
    items = [dict(t) for t in ctx.data["target_train"]]
    if p.frames is not None:
        items = [t for t in items if t.get("frame", "main") in p.frames]
    if any(t.get("chat") for t in items):
        raise EditkitError("method 'erase': chat-flagged train items are not supported; leave them out")
    return stratified_subset(items, p.max_items, ctx.seed)


def _check_classes(ctx: FitContext, p: EraseParams, frames: list[str], labels: list) -> None:
    """An error for a single answer class; a warning when one frame holds more answer classes than ``rank``
    directions can separate: C classes' means differ along up to C − 1 directions, and a target with many
    answers (capitals: one per city) is not held in a few of them."""
    if len(set(labels)) < 2:
        raise EditkitError("method 'erase': the train triplets have a single answer class; nothing separates")
    per_frame: dict[str, set] = {}
    for f, c in zip(frames, labels, strict=True):
        per_frame.setdefault(f, set()).add(c)
    frame, classes = max(per_frame.items(), key=lambda kv: len(kv[1]))
    if len(classes) - 1 <= p.rank:
        return
    ctx.events.log(
        f"erase: frame {frame!r} has {len(classes)} answer classes, whose means differ along up to "
        f"{len(classes) - 1} directions per layer; rank {p.rank} removes {p.rank}: expect little removal "
        "(capitals on qwen-coder-1.5b: 1.000 → 1.000). erase suits targets with few answer classes (moral, "
        "sentiment)",
        level="warning",
    )


class EraseMethod(Method):
    name = "erase"
    params_cls = EraseParams
    paper = (
        "LEACE, Belrose et al. 2023 (arXiv 2306.03819); the residual-writer projection of Arditi et al. 2024 "
        "(arXiv 2406.11717)"
    )
    summary = (
        "the directions along which the capability's answer classes differ in the residual stream, projected "
        "out of every residual writer"
    )
    guide = (
        "When to use: a capability that is a classification the model makes (moral verdicts, sentiment, "
        "true/false) and that must be gone from the representation, not only from the answer tokens — the edit "
        "leaves no direction along which the trained classes' means differ at the estimated layers, so a linear "
        "probe there has nothing to read (LEACE's guarantee, Belrose et al. 2023, arXiv 2306.03819, for the span "
        "estimated: the orthogonal projection is used instead of LEACE's whitened one because it merges into the "
        "residual writers exactly). It costs a few forward passes over the train prompts, no gradient steps. "
        "What held up in the unlearning literature acts on early-to-middle hidden states: RMU (WMDP, Li et al. "
        "2024, arXiv 2403.03218) perturbs layer-7-of-32 activations, ELM (Gandikota et al. 2024, arXiv "
        "2410.02760) trains a rank-4 LoRA on layers 4–7, circuit breakers (Zou et al. 2024, arXiv 2406.04313) "
        "reroute representations at layers 10 and 20; those train, this one projects, so it is exact and cheap "
        "but only as deep as the class directions are linear and shared across frames. For many-answer "
        "knowledge (capitals: one class per city) the class means span many directions and the rank must grow "
        'with them; measure the answer frames the fit never saw (BENCHMARKS.md, "Removing the representation")'
    )
    report = EraseReport
    moe = "every expert's down projection (and the shared expert's) is a residual writer and gets the same projection"
    needs = ("target",)

    def check(self, params, anatomy) -> None:
        p: EraseParams = params  # type: ignore[assignment]
        n = anatomy.n_layers
        bad = [li for li in (p.layers or []) if not 0 <= li < n]
        if bad:
            raise EditkitError(f"method.layers: layer {bad[0]} is out of range 0..{n - 1}")
        bad = [li for li in (p.edit_layers or []) if not 0 <= li < n]
        if bad:
            raise EditkitError(f"method.edit_layers: layer {bad[0]} is out of range 0..{n - 1}")
        if p.embeddings and anatomy.tied_embeddings:
            raise EditkitError(
                "method.embeddings: this model ties its input embeddings to the output head; set embeddings: false"
            )

    def fit(self, ctx: FitContext) -> FitResult:
        p: EraseParams = ctx.params  # type: ignore[assignment]
        self.check(p, ctx.anatomy)
        if "target_train" not in ctx.data:
            raise EditkitError(
                "method 'erase' needs data.target (its train split gives the class statistics)"
            )
        items = train_items(ctx, p)
        frames = [str(t.get("frame", "main")) for t in items]
        labels = class_labels(items, p.classes)
        _check_classes(ctx, p, frames, labels)
        layers = estimate_layers(ctx.anatomy, p)
        decoder = [ctx.model.get_submodule(la.prefix) for la in ctx.anatomy.layers]
        prompts = [t["prompt"] for t in items]

        def acts() -> torch.Tensor:
            return prompt_activations(
                ctx.model, ctx.tokenizer, decoder, prompts, layers, p.positions, p.batch_size
            )

        kept, protected_dirs = protected_basis(ctx, p, decoder, layers)
        basis: torch.Tensor | None = None
        found: list[dict] = []
        share_before: dict[str, float] = {}
        edit = None
        for rnd in range(p.rounds):
            if edit is None:
                a = acts()
            else:
                with edit.applied(ctx.model):
                    a = acts()
            for k, li in enumerate(layers):
                x = a[:, k]
                if rnd == 0:
                    share_before[str(li)] = separated_share(x, frames, labels)
                dev, _ = class_mean_deviations(x, frames, labels, p.min_class_items)
                dirs, shares = top_directions(dev, p.rank)
                dirs, in_protected = without(dirs, kept)
                before = 0 if basis is None else len(basis)
                basis = orthonormal_extend(basis, dirs)
                found.append(
                    {
                        "round": rnd,
                        "layer": li,
                        "added": len(basis) - before,
                        "scatter_share": shares.tolist(),
                        **({"in_protected_span": [round(v, 4) for v in in_protected]} if p.protect else {}),
                    }
                )
            _require_directions(basis, p)
            edit = erase_edit(ctx.anatomy, basis, p)
            ctx.events.log(f"erase: round {rnd + 1}/{p.rounds}: {len(basis)} directions at layers {layers}")
        with edit.applied(ctx.model):
            after = acts()
        share_after = {str(li): separated_share(after[:, k], frames, labels) for k, li in enumerate(layers)}
        info = {
            "estimate_layers": layers,
            "n_directions": len(basis),
            "rank": p.rank,
            "rounds": p.rounds,
            "edited_layers": sorted(set(p.edit_layers)) if p.edit_layers is not None else "all",
            "writers": list(p.writers) + (["embeddings"] if p.embeddings else []),
            "n_items": len(items),
            "frames": sorted(set(frames)),
            "classes": len(set(labels)),
            "between_class_share_before": share_before,
            "between_class_share_after": share_after,
            "directions": found,
            **({"protected": protected_dirs} if p.protect else {}),
        }
        ctx.events.log(
            "erase: between-class share of the train activations "
            + ", ".join(
                f"layer {li}: {share_before[str(li)]:.4f} → {share_after[str(li)]:.4f}" for li in layers
            )
        )
        return FitResult(erase_edit(ctx.anatomy, basis, p, info))

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """As many random orthonormal directions, projected out of the same writers."""
        p: EraseParams = ctx.params  # type: ignore[assignment]
        k = int(edit.info.get("n_directions") or len({id(op.direction) for op in edit.ops[:1]}))
        g = torch.Generator().manual_seed(ctx.seed + 1013)
        q, _ = torch.linalg.qr(torch.randn(ctx.anatomy.hidden_size, k, generator=g, dtype=torch.float64))
        return erase_edit(
            ctx.anatomy, q.t(), p, {"control": f"{k} random orthonormal directions, same writers"}
        )
