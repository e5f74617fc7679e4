"""`scalpel`: train a low-rank adapter so the model can no longer tell right from wrong on one capability.

SCALPEL (arXiv 2601.07411). For every target triplet (prompt, correct, incorrect) the length-normalised
log-probabilities ℓ⁺ and ℓ⁻ are pulled together, L_eq = mean (ℓ⁺ − ℓ⁻)² (or |·|), while regularisers keep
the rest of the model where it was:

    L = L_eq + λ_text·TextReg + λ_norm·Σ‖(α/r)BA‖²_F + λ_sparse·Σ‖(α/r)BA‖_F

TextReg is KL(p_base ‖ p_edit) on general text (the base side is the same model with the adapter disabled,
so no second copy is held in memory) or the squared magnitude of the adapter's output on that text. The
group-lasso term drives whole modules to zero, so the modules that keep a large ΔW say where the
capability was found. After fitting, the adapter is read out as ``LowRank`` ops and PEFT is unwrapped:
the model is the plain base model again and the pipeline applies or merges the Edit.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from contextlib import contextmanager

import torch

from editkit.edit.edit import Edit
from editkit.errors import DataError, EditkitError
from editkit.eval.forward import to_device
from editkit.eval.pairwise import (
    encode_pair_items,
    encode_prompt_answers,
    mean_answer_logprob,
    pad_id,
    pair_answer_logprobs,
    pairwise_margins,
)
from editkit.localize.class_stats import class_labels
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.lora import (  # noqa: F401 - adapter_ops, wrap_lora... are this method's API too
    ADAPTER,
    Role,
    adapter_ops,
    check_param_roles,
    lora_layers,
    lora_notes,
    module_map,
    random_lora_like,
    resolve_targets,
    step_dropout,
    unwrap_lora,
    wrap_lora,
)
from editkit.methods.lora_config import TrainConfig
from editkit.methods.lora_fit import train_lora
from editkit.methods.lora_loss import LossOut, encode_text, kl_to_base
from editkit.methods.scalpel.params import ScalpelParams
from editkit.methods.scalpel.report import ScalpelReport
from editkit.methods.scalpel.representation import (
    ResidualCapture,
    prompt_ends,
    repr_layers,
    representation_term,
)
from editkit.model.sizing import model_eval_batch_size

# ---------------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------------


def _delta_sq_norm(layer) -> torch.Tensor:
    """‖s·B·A‖²_F via the r×r Gram matrices (never forms the out×in product)."""
    a = layer.lora_A[ADAPTER].weight
    b = layer.lora_B[ADAPTER].weight
    s = layer.scaling[ADAPTER]
    return (s * s) * ((b.t() @ b) * (a @ a.t())).sum()


def norm_reg(layers) -> torch.Tensor:
    """NormReg = Σ_modules ‖(α/r)·B·A‖²_F."""
    return torch.stack([_delta_sq_norm(m) for _, m in layers]).sum()


def sparse_reg(layers) -> torch.Tensor:
    """SparsityReg = Σ_modules ‖(α/r)·B·A‖_F (group lasso; the clamp keeps the gradient finite at ΔW = 0)."""
    return torch.stack([_delta_sq_norm(m).clamp_min(1e-20).sqrt() for _, m in layers]).sum()


def kl_text_reg(peft_model, text: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over real tokens of KL(p_base ‖ p_edit) of the next-token distribution."""
    return kl_to_base(peft_model, text["input_ids"], text["attention_mask"])


@contextmanager
def _capture_lora_outputs(layers, store: list):
    handles = []
    for _, m in layers:
        s = m.scaling[ADAPTER]

        def hook(mod, args, out, s=s):
            store.append(s * out)

        handles.append(m.lora_B[ADAPTER].register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def magnitude_text_reg(peft_model, layers, text: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_modules mean over real tokens of ‖(α/r)·B·A·x‖² on general text: the adapter should stay silent there."""
    dev = peft_model.get_input_embeddings().weight.device
    keep = tuple(to_device(i, dev) for i in text["attention_mask"].bool().nonzero(as_tuple=True))
    ids, mask = to_device(text["input_ids"], dev), to_device(text["attention_mask"], dev)
    outs: list[torch.Tensor] = []
    with _capture_lora_outputs(layers, outs):
        peft_model(input_ids=ids, attention_mask=mask, use_cache=False)
    return torch.stack([o.float().pow(2).sum(-1)[keep].mean() for o in outs]).sum()


class ScalpelLoss:
    """L = L_eq + λ_t·TextReg + λ_n·NormReg + λ_s·SparsityReg (+ λ_r·Repr) on one batch; every term reported."""

    def __init__(self, peft_model, names: list[str], p: ScalpelParams, decoder_layers=None):
        self.model = peft_model
        self.layers = lora_layers(peft_model, names)
        self.p = p
        self.capture = ResidualCapture(decoder_layers or [])

    def __call__(self, batch: dict) -> LossOut:
        p = self.p
        if "shared" in batch:  # each prompt read once for both answers
            lp = pair_answer_logprobs(self.model, batch["pad"], batch["shared"])
            diff = lp[:, 0] - lp[:, 1]
        else:
            n = batch["n"]
            with self.capture:
                lp = mean_answer_logprob(self.model, batch["pairs"])
            diff = lp[:n] - lp[n:]
        eq = diff.pow(2).mean() if p.equalisation == "squared" else diff.abs().mean()
        zero = eq.new_zeros(())
        rep = zero
        if p.lambda_repr > 0 and self.capture.got:
            ends = prompt_ends(batch["pairs"]["answer_mask"])
            rep = representation_term(self.capture.got, n, ends, batch["classes"], batch["frames"])
        text = zero
        if p.lambda_text > 0 and batch.get("text") is not None:
            if p.text_reg == "kl":
                text = kl_text_reg(self.model, batch["text"])
            else:
                text = magnitude_text_reg(self.model, self.layers, batch["text"])
        norm = norm_reg(self.layers) if p.lambda_norm > 0 else zero
        sparse = sparse_reg(self.layers) if p.lambda_sparse > 0 else zero
        loss = eq + p.lambda_text * text + p.lambda_norm * norm + p.lambda_sparse * sparse
        terms = {"eq": eq, "text": text, "norm": norm, "sparse": sparse}
        if p.lambda_repr > 0:
            loss = loss + p.lambda_repr * rep
            terms["repr"] = rep
        d = diff.detach()
        return LossOut(
            loss=loss,
            terms=terms,
            metrics={"gap": d.mean(), "abs_gap": d.abs().mean(), "acc": (d > 0).float().mean()},
        )


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------


def split_validation(items: list[dict], fraction: float, rng: random.Random) -> tuple[list[dict], list[dict]]:
    """Hold out a validation slice of the train split (early stopping never sees the test split)."""
    if fraction <= 0 or len(items) < 4:
        return list(items), []
    order = list(range(len(items)))
    rng.shuffle(order)
    n_val = max(1, round(fraction * len(items)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [items[i] for i in train], [items[i] for i in val]


class ScalpelBatches:
    """batch(step, micro): a pure function of its arguments, so a resumed run sees the same batches."""

    def __init__(self, tokenizer, train: list[dict], texts: list[str], p: ScalpelParams, seed: int):
        self.tok, self.train, self.texts, self.p, self.seed = tokenizer, train, texts, p, seed

    def __call__(self, step: int, micro: int) -> dict:
        p = self.p
        rng = random.Random(f"{self.seed}:scalpel-batch:{step}:{micro}")
        k = min(p.batch_size, len(self.train))
        items = rng.sample(self.train, k)
        prompts = [it["prompt"] for it in items]
        correct, incorrect = [it["correct"] for it in items], [it["incorrect"] for it in items]
        # with prompt_once the prompt runs once with a KV cache for both answers (the representation term
        # reads the residual stream of the prompt+answer rows, so it keeps the one-row-per-answer batch)
        once = p.prompt_once and p.lambda_repr <= 0
        shared = encode_pair_items(self.tok, prompts, correct, incorrect, p.max_length) if once else []
        if once and all(e is not None for e in shared):
            batch = {"n": k, "shared": shared, "pad": pad_id(self.tok), "text": None}
        else:
            pairs = encode_prompt_answers(
                self.tok, prompts + prompts, correct + incorrect, max_length=p.max_length
            )
            batch = {"n": k, "pairs": pairs, "text": None}
        if p.lambda_repr > 0:  # the representation term's statistics: each item's class and frame
            batch["classes"] = class_labels(items)
            batch["frames"] = [str(it.get("frame", "main")) for it in items]
        if p.lambda_text > 0 and self.texts:
            rows = rng.sample(self.texts, min(p.text_batch_size, len(self.texts)))
            batch["text"] = encode_text(self.tok, rows, p.text_max_length)
        return batch


def _tokens_in(batch: dict) -> int:
    if "shared" in batch:
        n = sum(len(q) + len(a) + len(b) for q, a, b in batch["shared"])
    else:
        n = int(batch["pairs"]["attention_mask"].sum())
    if batch.get("text") is not None:
        n += int(batch["text"]["attention_mask"].sum())
    return n


# ---------------------------------------------------------------------------------------------------
# PEFT wrap / read-out / unwrap
# ---------------------------------------------------------------------------------------------------


def _fingerprint(p: ScalpelParams, names: list[str], train: list[dict], seed: int) -> str:
    blob = json.dumps(
        {
            "params": p.model_dump(mode="json", exclude={"steps", "checkpoint_every", "eval_every"}),
            "modules": names,
            "train": [(it.get("id"), it["prompt"], it["correct"], it["incorrect"]) for it in train],
            "seed": seed,
            **({"dropout_masks": "per-micro-batch generator"} if p.dropout else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------------------


def _repr_decoder(ctx: FitContext, p: ScalpelParams, peft_model, train: list[dict]) -> list | None:
    """The decoder layers whose input the representation term reads (None: the term is off); a warning when
    the target has so many answer classes that a batch holds fewer than two items of each."""
    if p.lambda_repr <= 0:
        return None
    base = peft_model.get_base_model()
    li = repr_layers(ctx.anatomy.n_layers, p.repr_layer_fracs)
    ctx.events.log(f"scalpel: representation term λ={p.lambda_repr} at the input of layers {li}")
    per_class = p.batch_size / max(1, len(set(class_labels(train))))
    if per_class < 2:
        ctx.events.log(
            f"scalpel: lambda_repr: a batch of {p.batch_size} triplets holds {per_class:.2f} items per answer "
            "class on average; with about one item per class the class means are the items themselves and the "
            "term only shrinks the residual stream — use it for targets with few answer classes (moral, "
            "sentiment) or raise batch_size",
            level="warning",
        )
    return [base.get_submodule(ctx.anatomy.layers[i].prefix) for i in li]


def _validator(peft_model, tokenizer, val: list[dict], p: ScalpelParams):
    """validate(step) for train_lora: the gap on the validation slice, and whether it says stop."""

    val_bs = model_eval_batch_size(peft_model, cpu_default=32)  # 32 on CPU; what fits on an accelerator

    def validate(step: int) -> dict:
        if not val:
            return {}
        m = pairwise_margins(peft_model, tokenizer, val, batch_size=val_bs, max_length=p.max_length)
        out = {
            "abs_gap": float(m.abs().mean()),
            "gap": float(m.mean()),
            "acc": float((m > 0).float().mean()),
        }
        if p.early_stop_gap is not None and out["abs_gap"] < p.early_stop_gap:
            out["stop"] = f"validation |gap| {out['abs_gap']:.4f} < {p.early_stop_gap}"
        elif p.early_stop_accuracy_eps is not None and abs(out["acc"] - 0.5) <= p.early_stop_accuracy_eps:
            out["stop"] = f"validation accuracy {out['acc']:.3f} within {p.early_stop_accuracy_eps} of 0.5"
        return out

    return validate


def _delta_norms(ctx: FitContext, ops) -> tuple[dict[str, float], list[float]]:
    """‖ΔW‖_F per module and per layer (also emitted as a layer × module heatmap event)."""
    norms = {op.module: float((op.scale * op.B @ op.A).norm()) for op in ops}
    where = module_map(ctx.anatomy)
    per_layer = [0.0] * ctx.anatomy.n_layers
    roles = [
        r
        for r in ("q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down", "router", "experts")
        if any(where.get(n, (0, ""))[1] == r for n in norms)
    ]
    grid = [[0.0] * len(roles) for _ in range(ctx.anatomy.n_layers)]
    for n, v in norms.items():
        li, role = where[n]
        per_layer[li] += v
        cell = grid[li][roles.index(role)]  # a layer's experts share one cell: ‖ΔW‖_F over all of them
        grid[li][roles.index(role)] = math.sqrt(cell * cell + v * v)
    ctx.events.emit(
        "heatmap",
        name="scalpel_delta_norm",
        values=grid,
        xlabel="module",
        xlabels=roles,
        ylabel="layer",
        title="SCALPEL ‖ΔW‖_F per layer and module",
    )
    return norms, per_layer


class ScalpelMethod(Method):
    name = "scalpel"
    params_cls = ScalpelParams
    paper = "SCALPEL: capability removal with low-rank adapters (arXiv 2601.07411)"
    summary = "a LoRA adapter trained so p(correct) ≈ p(incorrect) on the target, regularised on general text"
    report = ScalpelReport
    moe = (
        "targets `router` (each router's weight) and `experts` (every expert's down projection, one fused "
        "tensor) are adapted through PEFT's `target_parameters` (no LoRA dropout there) and read back as one "
        "low-rank delta per router and per expert; `gate`/`up`/`down` mean the shared expert's (Qwen2-MoE); "
        "the experts' fused gate/up tensors get no adapter, which `check` says in one line"
    )
    makes_adapter = True
    needs = ("target",)

    def check(self, params, anatomy) -> None:
        p: ScalpelParams = params  # type: ignore[assignment]
        if isinstance(p.layers, list):
            bad = [i for i in p.layers if i >= anatomy.n_layers]
            if bad:
                raise EditkitError(
                    f"method.layers: layer {bad[0]} is out of range for this model ({anatomy.n_layers} layers)"
                )
        if not resolve_targets(anatomy, list(p.targets), p.layers):
            raise EditkitError(
                f"method.targets: none of {list(p.targets)} exists on this model "
                f"({anatomy.architecture}); try q, k, v, o, gate, up, down"
            )
        check_param_roles(anatomy, list(p.targets), p.dropout)

    def notes(self, params, anatomy) -> list[str]:
        return lora_notes(anatomy, list(params.targets))

    def fit(self, ctx: FitContext) -> FitResult:
        p: ScalpelParams = ctx.params  # type: ignore[assignment]
        self.check(p, ctx.anatomy)
        names = resolve_targets(ctx.anatomy, list(p.targets), p.layers)
        items = list(ctx.data.get("target_train") or [])
        if not items:
            raise DataError("data.target: the train split has no items to fit on")
        train, val = split_validation(items, p.val_fraction, ctx.rng("scalpel-val"))
        texts = [t for t in (ctx.data.get("general_train") or []) if t and t.strip()]
        if p.lambda_text > 0 and not texts:
            raise DataError("data.general: scalpel needs general text (train split) when lambda_text > 0")
        ctx.events.log(
            f"scalpel: LoRA r={p.rank} α={p.alpha} on {len(names)} modules; "
            f"{len(train)} train / {len(val)} validation triplets, {len(texts)} general-text rows"
        )

        model = ctx.model
        was_training = model.training
        peft_model, flags = wrap_lora(model, names, p, ctx.seed)
        try:
            peft_model.eval()  # the base model's dropout off; LoRA dropout (StepDropout) is on while it trains
            loss = ScalpelLoss(peft_model, names, p, _repr_decoder(ctx, p, peft_model, train))
            batches, validate = step_dropout(
                peft_model,
                names,
                p.dropout,
                f"{ctx.seed}:scalpel-dropout",
                ScalpelBatches(ctx.tokenizer, train, texts, p, ctx.seed),
                _validator(peft_model, ctx.tokenizer, val, p),
            )

            cfg = TrainConfig(
                steps=p.steps,
                lr=p.lr,
                grad_accum=p.grad_accum,
                weight_decay=p.weight_decay,
                warmup_steps=p.warmup_steps,
                max_grad_norm=p.max_grad_norm,
                eval_every=p.eval_every if val else 0,
                checkpoint_every=p.checkpoint_every,
                checkpoint_dir=ctx.run_dir / "checkpoints" if ctx.run_dir is not None else None,
                resume=ctx.resume,
                fingerprint=_fingerprint(p, names, train, ctx.seed),
            )
            result = train_lora(
                peft_model, loss, batches, cfg, events=ctx.events, validate=validate, count_tokens=_tokens_in
            )
            final_val = validate(result.steps_run) if val else {}
            final_val.pop("stop", None)
            ops = adapter_ops(peft_model, names)
            adir = None
            if ctx.save_adapter and ctx.run_dir is not None and ctx.is_main:
                adir = ctx.run_dir / "adapter"
                peft_model.save_pretrained(str(adir))
        finally:
            ctx.model = unwrap_lora(peft_model, flags)
            ctx.model.train(was_training)
        if ctx.model is not model:  # pragma: no cover - PEFT returns the very object it wrapped
            raise EditkitError("internal: PEFT unload returned a different model object")

        norms, per_layer = _delta_norms(ctx, ops)
        last = result.history[-1] if result.history else {}
        info = {
            "rank": p.rank,
            "alpha": p.alpha,
            "modules": len(ops),
            "delta_norms": norms,
            "layer_delta_norms": per_layer,
            "top_layers": sorted(range(len(per_layer)), key=lambda i: -per_layer[i])[:5],
            "total_delta_norm": math.sqrt(sum(v * v for v in norms.values())),
            "steps_run": result.steps_run,
            "stop_reason": result.stop_reason,
            "resumed_from": result.resumed_from,
            "final_train_gap": last.get("metrics", {}).get("gap"),
            "final_loss_terms": last.get("terms"),
            "validation": {"n": len(val), **final_val},
            "train_items": len(train),
            "fit_tokens": result.tokens,
        }
        return FitResult(Edit(method="scalpel", ops=ops, info=info), adapter_dir=adir)

    def evaluate(self, ctx: FitContext, phase: str) -> dict[str, float]:
        """Mean |ℓ⁺ − ℓ⁻| on the target test items: equalisation drives it towards 0."""
        items = ctx.data.get("target_test") or []
        if not items:
            return {}
        m = pairwise_margins(
            ctx.model, ctx.tokenizer, items, batch_size=model_eval_batch_size(ctx.model, cpu_default=32)
        )
        return {"target_mean_abs_margin": float(m.abs().mean())}

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """A random LoRA of the same rank with the same ‖ΔW‖_F per module."""
        return random_lora_like(edit, f"{ctx.seed}:scalpel-control")
