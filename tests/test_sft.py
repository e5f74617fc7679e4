"""method: sft — response-only loss (exact), LoRA → LowRank ops, plain model afterwards, merge = hooks.

Fixtures live in this module (tiny random models from tests/tiny.py); tests/conftest.py is not touched.
"""

from __future__ import annotations

import copy

import pytest
import torch

from editkit.edit.edit import Edit, LowRank
from editkit.errors import DataError, EditkitError
from editkit.eval.refusal.chat import chat_prompts
from editkit.methods.base import FitContext
from editkit.methods.sft.fit import SftMethod, build_example, collate, response_loss
from editkit.methods.sft.params import SftParams
from editkit.model.anatomy import find_anatomy
from tests.tiny import fit_context, tiny_model


def test_labels_mask_exactly_the_prompt_tokens():
    _, tok = tiny_model("llama")
    ids, labels = build_example(tok, "Two plus three?", "It is five.")
    p_ids = tok(chat_prompts(tok, ["Two plus three?"])[0], add_special_tokens=False)["input_ids"]
    r_ids = tok("It is five.", add_special_tokens=False)["input_ids"]
    assert ids == p_ids + r_ids + [tok.eos_token_id]
    assert labels == [-100] * len(p_ids) + r_ids + [tok.eos_token_id]
    # truncation keeps the alignment
    ids2, labels2 = build_example(tok, "Two plus three?", "It is five.", max_length=len(p_ids) + 1)
    assert ids2 == ids[: len(p_ids) + 1] and labels2 == labels[: len(p_ids) + 1]


def test_response_loss_is_exactly_the_mean_nll_of_response_tokens():
    model, tok = tiny_model("llama")
    ex = [
        build_example(tok, "Paris is the capital of?", "France."),
        build_example(tok, "Hot or cold?", "Cold"),
    ]
    batch = collate(ex, pad_id=tok.pad_token_id)
    loss = response_loss(model, batch).detach()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, count = 0.0, 0
    for b, (ids, labels) in enumerate(ex):
        lp = torch.log_softmax(logits[b].double(), dim=-1)
        for t in range(1, len(ids)):
            if labels[t] != -100:
                total -= float(lp[t - 1, ids[t]])
                count += 1
    n_resp = sum(sum(1 for y in labels if y != -100) for _, labels in ex)
    assert count == n_resp
    assert abs(float(loss) - total / count) < 1e-5
    # a loss over all (non-pad) tokens would differ: the mask matters
    loss_all = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        torch.where(batch["attention_mask"][:, 1:] == 1, batch["input_ids"][:, 1:], -100).reshape(-1),
        ignore_index=-100,
    )
    assert abs(float(loss_all) - float(loss)) > 1e-3  # a loss over all tokens would differ


def _ctx(model, tok, tmp_path, **params) -> FitContext:
    data = {
        "harmful": [{"instruction": f"how do I build weapon {i}"} for i in range(8)],
        "harmless": [{"instruction": f"how do I bake bread {i}"} for i in range(8)],
        "pairs": [{"prompt": "Up is the opposite of?", "response": "Down."}],
    }
    p = SftParams(**params)
    return fit_context(model, tok, p, data, tmp_path)


def test_fit_gives_lowrank_ops_leaves_a_plain_model_and_merge_equals_hooks(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_HOME", str(tmp_path / "home"))
    model, tok = tiny_model("llama")
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    ctx = _ctx(
        model,
        tok,
        tmp_path,
        sets=["harmful", "harmless"],
        templates={"harmful": ["I cannot help with that.", "Sorry, no."]},
        base_answers=["harmless"],
        base_answer_tokens=6,
        rank=4,
        targets=["o", "down"],
        lr=5e-3,
        epochs=6,
        batch_size=4,
    )
    edit = SftMethod().fit(ctx).edit
    assert all(isinstance(op, LowRank) for op in edit.ops)
    assert [op.module for op in edit.ops] == find_anatomy(model).lora_targets(["o", "down"])
    assert edit.ops[0].A.shape == (4, 64) and edit.ops[0].B.shape == (64, 4) and edit.ops[0].scale == 4.0
    assert edit.info["pairs"] == {"harmful": 8, "harmless": 8}
    assert edit.info["final_loss"] < edit.info["first_loss"]
    # ctx.model is the plain model again: same modules, same weights, nothing trainable left over
    assert not any("lora" in n for n, _ in model.named_modules())
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    # the base answers are cached (second fit reads them)
    cached = list((tmp_path / "home" / "sft").glob("base-answers-*.json"))
    assert len(cached) == 1
    # merge equals hooks; the artifact round-trips
    edit.save(tmp_path / "edit")
    loaded = Edit.load(tmp_path / "edit")
    ids = tok(["Two plus three is five."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        with loaded.applied(model):
            hooked = model(ids).logits
        merged = copy.deepcopy(model)
        edit.merge_into(merged)
        assert float((hooked - model(ids).logits).abs().max()) > 1e-4
        assert float((hooked - merged(ids).logits).abs().max()) <= 1e-4
    control = SftMethod().control(ctx, edit)
    for a, b in zip(control.ops, edit.ops, strict=True):
        assert a.module == b.module and a.A.shape == b.A.shape
        assert abs(float((a.B @ a.A).norm()) - float((b.B @ b.A).norm())) < 1e-3 * max(
            1.0, float((b.B @ b.A).norm())
        )


def test_response_column_and_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_HOME", str(tmp_path / "home"))
    model, tok = tiny_model("llama")
    edit = SftMethod().fit(_ctx(model, tok, tmp_path, sets=["pairs"], rank=2, epochs=1, targets=["o"])).edit
    assert edit.info["pairs"] == {"pairs": 1} and len(edit.ops) == 2
    with pytest.raises(DataError, match="data.sets.harmful: row 0 has no 'response'"):
        SftMethod().fit(_ctx(model, tok, tmp_path, sets=["harmful"]))
    with pytest.raises(EditkitError, match="method.sets: 'nope' is not a data set"):
        SftMethod().fit(_ctx(model, tok, tmp_path, sets=["nope"]))


def test_empty_micro_batches_are_skipped_not_filled_with_repeats():
    """A short batch split into more micro-batches than it has items: the empty ones are skipped."""
    from editkit.methods.lora_config import TrainConfig
    from editkit.methods.lora_fit import train_lora
    from editkit.methods.lora_loss import LossOut

    model = torch.nn.Linear(1, 1, bias=False)
    seen = []

    def batch_fn(step, micro):
        return None if micro >= 2 else (step, micro)

    def loss_fn(batch):
        seen.append(batch)
        return LossOut(loss=(model.weight - 1).pow(2).sum())

    res = train_lora(
        model, loss_fn, batch_fn, TrainConfig(steps=2, lr=0.1, grad_accum=4), count_tokens=lambda b: 1
    )
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert res.tokens == 4 and res.steps_run == 2


def test_distill_rows_are_learned_by_exact_kl_to_the_base_model_and_ce_rows_by_cross_entropy():
    from peft import LoraConfig, get_peft_model

    from editkit.methods.lora_loss import encode_text
    from editkit.methods.sft.fit import sft_loss

    model, tok = tiny_model("qwen2")
    base = copy.deepcopy(model)
    ex = [
        build_example(tok, "Paris is the capital of?", "France, a country in Europe."),
        build_example(tok, "Hot or cold?", "Cold"),
        build_example(tok, "Name a colour.", "Blue is a colour."),
    ]
    kd = [True, False, True]
    batch = collate(ex, pad_id=tok.pad_token_id, distill=kd)
    text = encode_text(tok, ["The river runs to the sea.", "One two three"], 16)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["o_proj", "down_proj"]))
    p = SftParams(sets=["a"], distill_weight=0.5, kl_general=2.0)
    # at init (B = 0) the adapted model is the base model: both KL terms are exactly 0
    out0 = sft_loss(peft_model, batch, p, text)
    assert out0.terms["kl_distill"] == 0.0 and out0.terms["kl_general"] == 0.0
    torch.manual_seed(1)
    with torch.no_grad():
        for n, prm in peft_model.named_parameters():
            if "lora_B" in n:
                prm.normal_(0, 0.5)
    out = sft_loss(peft_model, batch, p, text)
    with torch.no_grad():
        lb = torch.log_softmax(
            base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double(), -1
        )
        le = torch.log_softmax(
            peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double(),
            -1,
        )
        kls = []
        for b, (ids, labels) in enumerate(ex):
            if not kd[b]:
                continue
            for t in range(1, len(ids)):
                if labels[t] != -100:  # the position t-1 predicts response token t
                    kls.append(float((lb[b, t - 1].exp() * (lb[b, t - 1] - le[b, t - 1])).sum()))
        tb = torch.log_softmax(base(**text).logits.double(), -1)
        te = torch.log_softmax(peft_model(**text).logits.double(), -1)
        kl_text = (tb.exp() * (tb - te)).sum(-1)[text["attention_mask"].bool()].mean()
    n_resp = sum(sum(1 for y in labels if y != -100) for (_, labels), k in zip(ex, kd, strict=True) if k)
    assert len(kls) == n_resp and out.terms["kl_distill"] > 1e-4
    assert abs(out.terms["kl_distill"] - sum(kls) / len(kls)) < 1e-5
    assert abs(out.terms["kl_general"] - float(kl_text)) < 1e-5
    ce = float(response_loss(peft_model, {k: v[1:2] for k, v in batch.items()}).detach())
    assert abs(out.terms["ce"] - ce) < 1e-6
    expect = out.terms["ce"] + 0.5 * out.terms["kl_distill"] + 2.0 * out.terms["kl_general"]
    assert abs(float(out.loss) - expect) < 1e-5


def test_distill_and_kl_general_errors(tmp_path):
    model, tok = tiny_model("llama")
    with pytest.raises(ValueError, match="distill: 'other' is not one of sets"):
        SftParams(sets=["harmful"], distill=["other"])
    ctx = _ctx(model, tok, tmp_path, sets=["pairs"], kl_general=1.0, targets=["o"])
    with pytest.raises(DataError, match="data.general: method.kl_general > 0 needs general text"):
        SftMethod().fit(ctx)
