"""`sft`: install a behaviour with a LoRA fine-tune on (prompt, response) pairs, merged as LowRank ops.

The general tool behind ``recipes/plant_refusal.yaml``: harmful prompts are paired with short refusals and
harmless prompts with the *base model's own greedy answers*, so the fine-tune teaches refusal and nothing
else moves. Responses come from three places per named data set (``data.sets``):

* ``templates: {set: [responses...]}`` — cycled over the set's prompts;
* ``base_answers: [set, ...]`` — the base model's greedy chat answer (generated once, cached on disk);
* any other listed set must carry a ``response`` column.

Loss is next-token cross-entropy on the response tokens only (prompt tokens are labelled -100), except for
the sets named in ``distill``: there the adapted model is pulled towards the base model's whole next-token
distribution over the response tokens, KL(p_base ‖ p_model), rather than towards the base model's greedy
tokens (cross-entropy on greedy answers sharpens the distribution, so "answer as before" still moves the model).
``kl_general`` adds the same KL on rows of the recipe's general text (train split). Training
uses the shared loop in :mod:`editkit.methods.lora_fit`; afterwards A/B of every adapted module become
``LowRank`` ops and the adapter is unloaded, so ``ctx.model`` is the plain base model again.
"""

from __future__ import annotations

import hashlib
import json
import random

import torch

from editkit.edit.edit import Edit
from editkit.errors import DataError, EditkitError
from editkit.eval.refusal.chat import chat_prompts, generate, prompt_texts
from editkit.eval.refusal.metrics import phase_refusal_metrics, refusal_eval_units
from editkit.methods.base import FitContext, FitResult, Method
from editkit.methods.lora import (
    adapter_ops,
    check_param_roles,
    lora_notes,
    random_lora_like,
    resolve_targets,
    unwrap_lora,
    wrap_lora,
)
from editkit.methods.lora_config import TrainConfig
from editkit.methods.lora_fit import train_lora
from editkit.methods.lora_loss import LossOut, encode_text, kl_to_base
from editkit.methods.sft.params import SftParams
from editkit.methods.sft.report import SftReport
from editkit.model.load import editkit_home
from editkit.run.distributed import gather_shares

# --------------------------------------------------------------------------------------------------
# examples and loss
# --------------------------------------------------------------------------------------------------


def build_example(
    tokenizer, prompt: str, response: str, max_length: int = 256
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one chat pair: prompt tokens labelled -100, response + end-of-turn learned."""
    p_ids = tokenizer(chat_prompts(tokenizer, [prompt])[0], add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p_ids + r_ids)[:max_length]
    labels = ([-100] * len(p_ids) + r_ids)[:max_length]
    return ids, labels


def collate(
    examples: list[tuple[list[int], list[int]]], pad_id: int, distill: list[bool] | None = None
) -> dict[str, torch.Tensor]:
    """Right-padded batch; padding is masked out of attention and loss. ``distill`` marks KL rows."""
    n = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    kd = torch.tensor(distill if distill is not None else [False] * len(examples), dtype=torch.bool)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "distill": kd}


def _rows(batch: dict[str, torch.Tensor], sel: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[sel] for k, v in batch.items()}


def sft_loss(peft_model, batch: dict[str, torch.Tensor], p: SftParams, text=None) -> LossOut:
    """Cross-entropy on the response tokens of the plain rows, KL to base on those of the distill rows,
    plus ``kl_general`` × KL to base on the general-text rows (``text``), each a mean over its tokens."""
    kd = batch["distill"]
    total = torch.zeros(())
    terms: dict[str, torch.Tensor] = {}
    if (~kd).any():
        terms["ce"] = response_loss(peft_model, _rows(batch, ~kd))
        total = total + terms["ce"]
    if kd.any():
        rows = _rows(batch, kd)
        keep = torch.zeros_like(rows["labels"], dtype=torch.bool)
        keep[:, :-1] = rows["labels"][:, 1:] != -100  # the positions that predict a response token
        terms["kl_distill"] = kl_to_base(peft_model, rows["input_ids"], rows["attention_mask"], keep)
        total = total + p.distill_weight * terms["kl_distill"]
    if text is not None:
        terms["kl_general"] = kl_to_base(peft_model, text["input_ids"], text["attention_mask"])
        total = total + p.kl_general * terms["kl_general"]
    return LossOut(loss=total, terms={k: float(v.detach()) for k, v in terms.items()})


def response_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled (response) tokens only."""
    dev = next(model.parameters()).device
    logits = model(
        input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev), use_cache=False
    ).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = batch["labels"][:, 1:].to(dev)
    return torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
    )


# --------------------------------------------------------------------------------------------------
# base answers (cached: the base model's greedy answers do not change between runs)
# --------------------------------------------------------------------------------------------------


def _model_fingerprint(model, path: str) -> str:
    emb = model.get_input_embeddings().weight.detach()
    probe = emb[:4, :16].to(torch.float32).contiguous().numpy().tobytes()
    h = hashlib.sha256(path.encode() + probe + str(sum(p.numel() for p in model.parameters())).encode())
    return h.hexdigest()[:16]


def base_answers(ctx: FitContext, prompts: list[str], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy chat answers of the (unedited) model, cached under ~/.cache/editkit/sft/."""

    fp = _model_fingerprint(ctx.model, ctx.model_path)
    key = hashlib.sha256(
        json.dumps([fp, max_new_tokens, chat_prompts(ctx.tokenizer, prompts)]).encode()
    ).hexdigest()[:20]
    cache = editkit_home() / "sft" / f"base-answers-{key}.json"
    if cache.exists():
        ctx.events.log(f"base answers from cache {cache}")
        return json.loads(cache.read_text())

    def answer(share: list[str]) -> list[str]:  # this process's share of the prompts
        out: list[str] = []
        for i in range(0, len(share), batch_size):
            out += generate(ctx.model, ctx.tokenizer, share[i : i + batch_size], max_new_tokens, batch_size)
            ctx.events.progress("fit", min(i + batch_size, len(share)), len(share))
        return out

    answers = [a for part in gather_shares(answer, prompts) for a in part]
    if not ctx.is_main:
        return answers
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(answers))
    tmp.replace(cache)
    return answers


def build_pairs(ctx: FitContext, p: SftParams) -> list[tuple[str, str, str]]:
    """(set, prompt, response) for every trained prompt."""
    pairs: list[tuple[str, str, str]] = []
    for name in p.sets:
        if name not in ctx.data:
            raise EditkitError(
                f"method.sets: '{name}' is not a data set of this recipe (add it under data.sets)"
            )
        rows = list(ctx.data[name])[: p.max_per_set]
        prompts = prompt_texts(rows, f"data.sets.{name}")
        if name in p.templates:
            tpl = p.templates[name]
            if not tpl:
                raise EditkitError(f"method.templates.{name}: give at least one response")
            responses = [tpl[i % len(tpl)] for i in range(len(prompts))]
        elif name in p.base_answers:
            responses = base_answers(ctx, prompts, p.base_answer_tokens)
        else:
            responses = []
            for i, r in enumerate(rows):
                if not isinstance(r, dict) or not isinstance(r.get("response"), str):
                    raise DataError(
                        f"data.sets.{name}: row {i} has no 'response'; give method.templates.{name} "
                        f"or list '{name}' in method.base_answers"
                    )
                responses.append(r["response"])
        pairs += [(name, q, a) for q, a in zip(prompts, responses, strict=True)]
    return pairs


# --------------------------------------------------------------------------------------------------
# LoRA on ctx.model, then LowRank ops
# --------------------------------------------------------------------------------------------------


def fit_sft(ctx: FitContext, p: SftParams, pairs: list[tuple[str, str, str]]) -> FitResult:
    tok = ctx.tokenizer
    examples = [build_example(tok, q, a, p.max_length) for _, q, a in pairs]
    kd = [s in p.distill for s, _, _ in pairs]
    texts = [t for t in (ctx.data.get("general_train") or []) if t and t.strip()]
    if p.kl_general > 0 and not texts:
        raise DataError("data.general: method.kl_general > 0 needs general text (train split)")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    order_rng = ctx.rng("sft-order")
    n_per_epoch = max(1, -(-len(examples) // p.batch_size))
    steps = max(1, round(p.epochs * n_per_epoch))
    epochs_order: dict[int, list[int]] = {}

    def batch_fn(step: int, micro: int):
        epoch, k = divmod(step, n_per_epoch)
        if epoch not in epochs_order:  # pure function of the step: each epoch's shuffle is seeded
            idx = list(range(len(examples)))
            order_rng.seed(f"{ctx.seed}:sft-order:{epoch}")
            order_rng.shuffle(idx)
            epochs_order[epoch] = idx
        sel = epochs_order[epoch][k * p.batch_size : (k + 1) * p.batch_size]
        per = -(-len(sel) // p.grad_accum)
        sel = sel[micro * per : (micro + 1) * per]
        if not sel:
            return None  # nothing left for this micro-batch
        batch = {"pairs": collate([examples[i] for i in sel], pad, [kd[i] for i in sel]), "text": None}
        if p.kl_general > 0:
            rows = random.Random(f"{ctx.seed}:sft-text:{step}:{micro}").sample(
                texts, min(p.text_batch_size, len(texts))
            )
            batch["text"] = encode_text(tok, rows, p.text_max_length)
        return batch

    targets = resolve_targets(ctx.anatomy, p.targets, "all" if p.layers is None else p.layers)
    model, was_training = ctx.model, ctx.model.training
    peft_model, flags = wrap_lora(model, targets, p, ctx.seed)
    adapter_dir = None
    peft_model.train()
    try:
        result = train_lora(
            peft_model,
            lambda b: sft_loss(peft_model, b["pairs"], p, b["text"]),
            batch_fn,
            TrainConfig(
                steps=steps, lr=p.lr, grad_accum=p.grad_accum, weight_decay=p.weight_decay, max_grad_norm=1.0
            ),
            events=ctx.events,
            count_tokens=lambda b: int((b["pairs"]["labels"] != -100).sum()),
        )
        ops = adapter_ops(peft_model, targets)
        if ctx.is_main:
            adapter_dir = ctx.run_dir / "adapter"
            peft_model.save_pretrained(str(adapter_dir))
    finally:
        ctx.model = unwrap_lora(peft_model, flags)  # plain modules back in the model, weights untouched
        ctx.model.train(was_training)
    if ctx.model is not model:  # pragma: no cover - PEFT returns the very object it wrapped
        raise EditkitError("internal: PEFT unload returned a different model object")
    hist = result.history
    counts: dict[str, int] = {}
    for s, _, _ in pairs:
        counts[s] = counts.get(s, 0) + 1
    info = {
        "pairs": counts,
        "targets": len(targets),
        "rank": p.rank,
        "steps": result.steps_run,
        "first_loss": round(hist[0]["loss"], 4) if hist else None,
        "final_loss": round(hist[-1]["loss"], 4) if hist else None,
        "final_terms": {k: round(v, 4) for k, v in hist[-1]["terms"].items()} if hist else {},
        "distill": list(p.distill),
        "kl_general": p.kl_general,
        "train_seconds": round(result.seconds, 1),
        "response_tokens": result.tokens,
    }
    return FitResult(Edit(method="sft", ops=ops, info=info), adapter_dir=adapter_dir)


class SftMethod(Method):
    name = "sft"
    params_cls = SftParams
    paper = "LoRA (Hu et al. 2021) supervised fine-tuning on chat pairs"
    summary = "a behaviour installed by a LoRA fine-tune on (prompt, response) pairs, merged into the weights"
    report = SftReport
    moe = "as `scalpel`: `router` and `experts` targets through PEFT's `target_parameters`"
    makes_adapter = True

    def check(self, params, anatomy) -> None:
        p: SftParams = params  # type: ignore[assignment]
        bad = [li for li in (p.layers or []) if not 0 <= li < anatomy.n_layers]
        if bad:
            raise EditkitError(
                f"method.layers: layer {bad[0]} is out of range for this model ({anatomy.n_layers} layers)"
            )
        if not resolve_targets(anatomy, p.targets, "all" if p.layers is None else p.layers):
            raise EditkitError(
                f"method.targets: none of {p.targets} exists on this model ({anatomy.architecture}); "
                "try q, k, v, o, gate, up, down"
            )
        check_param_roles(anatomy, p.targets, getattr(p, "dropout", 0.0))
        for name, tpl in p.templates.items():
            if not tpl:
                raise EditkitError(f"method.templates.{name}: give at least one response")

    def notes(self, params, anatomy) -> list[str]:
        return lora_notes(anatomy, list(params.targets))

    def check_data(self, params, sets: set[str]) -> None:
        p: SftParams = params  # type: ignore[assignment]
        for field, names in (("sets", p.sets), ("base_answers", p.base_answers)):
            for name in names:
                if name not in sets:
                    raise EditkitError(
                        f"method.{field}: '{name}' is not a data set of this recipe (add it under data.sets)"
                    )

    def fit(self, ctx: FitContext) -> FitResult:
        p: SftParams = ctx.params  # type: ignore[assignment]
        self.check(p, ctx.anatomy)
        pairs = build_pairs(ctx, p)
        ctx.events.log(f"sft: {len(pairs)} pairs from {', '.join(p.sets)}")
        return fit_sft(ctx, p, pairs)

    def evaluate(self, ctx: FitContext, phase: str) -> dict[str, float]:
        p: SftParams = ctx.params  # type: ignore[assignment]
        return phase_refusal_metrics(
            ctx,
            p.eval_harmful,
            p.eval_harmless,
            p.eval_max_prompts,
            p.eval_max_new_tokens,
            phase,
        )

    def evaluation_units(self, ctx: FitContext) -> int:
        p: SftParams = ctx.params  # type: ignore[assignment]
        return refusal_eval_units(ctx, p.eval_harmful, p.eval_harmless, p.eval_max_prompts)

    def control(self, ctx: FitContext, edit: Edit) -> Edit | None:
        """Random A/B of the same shapes and ‖ΔW‖_F per module (same op structure)."""
        return random_lora_like(edit, f"{ctx.seed}:sft-control")
