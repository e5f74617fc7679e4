"""heads: per-query-head knockouts (hook vs weights), batched masks, balanced design, sparse recovery, fit."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from editkit.eval.pairwise import pairwise_margins
from editkit.localize.designs import balanced_design, exhaustive_design, knockouts_per_trial
from editkit.localize.head_masks import HeadMasker, design_to_masks, encode_items, score_head_masks
from editkit.localize.recovery import sparse_recovery
from editkit.methods.base import FitContext
from editkit.methods.heads.fit import HeadsMethod, head_mask_edit
from editkit.methods.heads.params import HeadsParams
from editkit.model.anatomy import find_anatomy
from editkit.run.events import NullEventLog
from tests.tiny import tiny_model

ITEMS = [
    {"id": "a", "prompt": "Two plus three is", "correct": " five", "incorrect": " seven"},
    {"id": "b", "prompt": "Paris is the capital of", "correct": " France", "incorrect": " Spain"},
    {"id": "c", "prompt": "Hot is the opposite of", "correct": " cold", "incorrect": " down"},
    {"id": "d", "prompt": "The quick brown fox jumps over the lazy", "correct": " dog", "incorrect": " fox"},
    {"id": "e", "prompt": "Seven minus four is", "correct": " three", "incorrect": " five"},
    {"id": "f", "prompt": "Madrid is the capital of", "correct": " Spain", "incorrect": " France"},
]


@pytest.fixture
def tiny():
    model, tok = tiny_model("llama")
    return model, tok, find_anatomy(model)


def _ids(tok, text="Paris is the capital of France. Two plus three is five."):
    return tok(text, return_tensors="pt")["input_ids"]


def test_zeroing_head_weights_equals_hook_and_removes_only_that_head(tiny):
    model, tok, an = tiny
    layer, head = 1, 2
    ids = _ids(tok)
    captured = {}
    o_proj = model.get_submodule(an.layer(layer).o)

    def grab(name):
        def hook(mod, args, out):
            captured[name] = (args[0].detach().clone(), out.detach().clone())

        return hook

    h = o_proj.register_forward_hook(grab("base"))
    with torch.no_grad():
        base_logits = model(ids).logits
    h.remove()

    mask = torch.ones(an.n_layers, an.n_heads)
    mask[layer, head] = 0
    h = o_proj.register_forward_hook(grab("hook"))
    with torch.no_grad(), HeadMasker(model, an) as hm:
        hm.set(mask)
        hook_logits = model(ids).logits
    h.remove()

    merged = copy.deepcopy(model)
    head_mask_edit(find_anatomy(merged), [(layer, head)]).merge_into(merged)
    with torch.no_grad():
        weight_logits = merged(ids).logits
    w = merged.get_submodule(an.layer(layer).o).weight
    cols = an.head_slice(head)
    assert torch.count_nonzero(w[:, cols]) == 0
    assert torch.equal(w[:, : cols.start], o_proj.weight[:, : cols.start])

    assert (hook_logits - weight_logits).abs().max() <= 1e-5
    assert (hook_logits - base_logits).abs().max() > 1e-3  # the knockout does something
    # o_proj now sees the same input with head 2's slice zeroed (nothing upstream changed), so its output
    # lost exactly head 2's share.
    x, out_base = captured["base"]
    x_hook, out_hook = captured["hook"]
    expect = x.clone()
    expect[..., cols] = 0
    assert torch.equal(x_hook, expect)
    contribution = x[..., cols] @ o_proj.weight[:, cols].T
    assert (out_base - out_hook - contribution).abs().max() <= 1e-5
    assert contribution.abs().max() > 1e-3


def test_per_row_masks_equal_separate_forwards(tiny):
    model, tok, an = tiny
    gen = torch.Generator().manual_seed(1)
    masks = (torch.rand(5, an.n_layers, an.n_heads, generator=gen) > 0.4).float()
    masks[0] = 1.0  # one row without any knockout
    ids = _ids(tok).repeat(5, 1)
    with torch.no_grad(), HeadMasker(model, an) as hm:
        hm.set(masks)
        batched = model(ids).logits
    for r in range(5):
        knocked = [(li, h) for li in range(an.n_layers) for h in range(an.n_heads) if masks[r, li, h] == 0]
        with torch.no_grad():
            if knocked:
                with head_mask_edit(an, knocked).applied(model):
                    alone = model(ids[r : r + 1]).logits
            else:
                alone = model(ids[r : r + 1]).logits
        assert (batched[r : r + 1] - alone).abs().max() <= 1e-5, r

    for score in ("logprob", "margin", "accuracy"):
        many = score_head_masks(model, tok, an, ITEMS, masks, score=score, batch_rows=1000)
        one = score_head_masks(model, tok, an, ITEMS, masks, score=score, masks_per_forward=1)
        assert (many - one).abs().max() <= 1e-5
    # and the per-mask score is the plain pairwise margin measured with the Edit's own hooks
    knocked = [(li, h) for li in range(an.n_layers) for h in range(an.n_heads) if masks[3, li, h] == 0]
    with head_mask_edit(an, knocked).applied(model):
        ref = pairwise_margins(model, tok, ITEMS).mean()
    assert (
        abs(float(score_head_masks(model, tok, an, ITEMS, masks[3:4], score="margin")[0]) - float(ref))
        <= 1e-5
    )


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "gpt2"])
def test_shared_prefix_equals_separate_forwards(family):
    """Masks grouped by their first touched layer run the layers below it once per item: same numbers."""
    from editkit.localize.head_masks import first_touched_layer, head_mask_logprobs

    model, tok = tiny_model(family)
    an = find_anatomy(model)
    enc = encode_items(tok, ITEMS, "margin")
    masks = design_to_masks(exhaustive_design(an.n_total_heads), an.n_layers, an.n_heads)
    masks = torch.cat([masks, torch.ones(1, an.n_layers, an.n_heads)])  # and one mask touching nothing
    assert first_touched_layer(masks).tolist() == [
        li for li in range(an.n_layers) for _ in range(an.n_heads)
    ] + [an.n_layers]
    calls = []
    o_proj = model.get_submodule(an.layer(0).o)  # what layer 0 really computes on
    h = o_proj.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    try:
        shared = head_mask_logprobs(model, an, enc, masks, masks_per_forward=an.n_heads)
    finally:
        h.remove()
    alone = head_mask_logprobs(model, an, enc, masks, masks_per_forward=1)
    assert (shared - alone).abs().max() <= 1e-5
    rows = enc["input_ids"].shape[0]
    # layer 0 saw every row of the chunks masking layer 0, and one copy of the items for the later chunks
    assert calls[0] == rows * an.n_heads and set(calls[1:]) == {rows}


def test_balanced_design_uses_every_head_equally():
    X = balanced_design(270, 100, 6, seed=3)
    assert X.shape == (100, 270)
    assert (X.sum(axis=1) == 6).all()
    counts = X.sum(axis=0)
    assert counts.sum() == 600
    assert counts.min() == 2 and counts.max() == 3  # 600 = 270*2 + 60
    assert (counts == 3).sum() == 60
    X2 = balanced_design(20, 10, 4, seed=0)
    assert (X2.sum(axis=0) == 2).all()  # 40 knockouts over 20 heads: exactly twice each
    assert np.array_equal(balanced_design(20, 10, 4, seed=0), X2)  # seeded
    assert not np.array_equal(balanced_design(20, 10, 4, seed=1), X2)
    assert knockouts_per_trial(270, 0.02) == 6
    assert np.array_equal(exhaustive_design(4), np.eye(4, dtype=np.int8))
    m = design_to_masks(X2[:1], 4, 5)
    assert m.shape == (1, 4, 5) and float(m.sum()) == 16.0


@pytest.mark.parametrize("solver", ["lasso", "lasso_cv", "omp"])
def test_sparse_recovery_finds_planted_heads(solver):
    rng = np.random.default_rng(0)
    n, planted = 270, [7, 41, 100, 150, 262]
    X = balanced_design(n, 60, 14, seed=0)
    beta = rng.normal(0, 0.02, n)  # many small effects
    beta[planted] = [-1.0, -1.5, -2.0, -0.8, -1.2]
    y = X @ beta + rng.normal(0, 0.05, 60)
    coef, r2, _ = sparse_recovery(X, y, solver=solver, alpha=0.01, n_nonzero=10)
    assert set(np.argsort(coef)[:5].tolist()) == set(planted)
    assert r2 > 0.9
    coef0, r20, _ = sparse_recovery(X, np.zeros(60))
    assert not coef0.any() and r20 == 0.0


def _ctx(model, tok, an, tmp_path, **params):
    return FitContext(
        model=model,
        tokenizer=tok,
        anatomy=an,
        params=HeadsParams(**params),
        data={"target_train": ITEMS, "target_test": ITEMS},
        events=NullEventLog(),
        run_dir=tmp_path,
        seed=0,
    )


def test_exhaustive_fit_ranks_heads_by_their_own_drop(tiny, tmp_path):
    model, tok, an = tiny
    ctx = _ctx(model, tok, an, tmp_path, design="exhaustive", top_k=3, items=6)
    edit = HeadsMethod().fit(ctx).edit
    base = float(pairwise_margins(model, tok, ITEMS).mean())
    drops = np.zeros((an.n_layers, an.n_heads))
    for li in range(an.n_layers):
        for h in range(an.n_heads):
            with head_mask_edit(an, [(li, h)]).applied(model):
                drops[li, h] = float(pairwise_margins(model, tok, ITEMS).mean()) - base
    assert np.abs(np.array(edit.info["coefficients"]) - drops).max() <= 1e-5
    want = [list(divmod(int(j), an.n_heads)) for j in np.argsort(drops.ravel(), kind="stable")[:3]]
    assert edit.info["heads"] == want
    assert edit.info["n_evals"] == an.n_total_heads + 1
    assert (tmp_path / "heads_heatmap.png").stat().st_size > 1000


def test_balanced_fit_makes_a_head_edit(tiny, tmp_path):
    model, tok, an = tiny
    events = []

    class Log(NullEventLog):
        def emit(self, type, **fields):
            events.append({"type": type, **fields})
            return events[-1]

    ctx = _ctx(model, tok, an, tmp_path, trials=6, knockouts=2, top_k=2, score="logprob")
    ctx.events = Log()
    edit = HeadsMethod().fit(ctx).edit
    assert edit.info["n_evals"] == 7 and edit.info["n_trials"] == 6 and edit.info["knockouts_per_trial"] == 2
    assert edit.info["batch_rows"] == 128  # the CPU default (the model is on CPU)
    assert len(edit.info["heads"]) == 2 and len(edit.ops) in (1, 2)
    assert np.array(edit.info["coefficients"]).shape == (an.n_layers, an.n_heads)
    heat = [e for e in events if e["type"] == "heatmap"]
    assert len(heat) == 1 and len(heat[0]["values"]) == an.n_layers
    assert [e["done"] for e in events if e["type"] == "progress"][-1] == 6
    ctrl = HeadsMethod().control(ctx, edit)
    assert len(ctrl.info["heads"]) == 2 and not {tuple(h) for h in ctrl.info["heads"]} & {
        tuple(h) for h in edit.info["heads"]
    }


def test_refine_ranks_the_fit_candidates_by_their_single_head_drop(tiny, tmp_path):
    model, tok, an = tiny
    plain = (
        HeadsMethod().fit(_ctx(model, tok, an, tmp_path, trials=8, knockouts=2, top_k=2, score="margin")).edit
    )
    edit = (
        HeadsMethod()
        .fit(_ctx(model, tok, an, tmp_path, trials=8, knockouts=2, top_k=2, score="margin", refine=4))
        .edit
    )
    assert edit.info["n_evals"] == 8 + 4 + 1 and edit.info["n_refine"] == 4
    # the same design (seed) and fit: the 4 candidates are the plain fit's top 4
    cand = [tuple(h) for h in plain.info["ranking"][:4]]
    assert sorted(edit.info["refined_drops"]) == sorted(f"L{li}H{h}" for li, h in cand)
    base = float(pairwise_margins(model, tok, ITEMS).mean())
    measured = {}
    for li, h in cand:
        with head_mask_edit(an, [(li, h)]).applied(model):
            measured[(li, h)] = float(pairwise_margins(model, tok, ITEMS).mean()) - base
    for (li, h), d in measured.items():
        assert abs(edit.info["refined_drops"][f"L{li}H{h}"] - d) <= 1e-5
    want = sorted(cand, key=lambda c: measured[c])[:2]
    assert [tuple(h) for h in edit.info["heads"]] == want
    assert [tuple(h) for h in edit.info["ranking"][4:]] == [tuple(h) for h in plain.info["ranking"][4:]]


def test_explicit_heads_still_apply(tiny, tmp_path):
    model, tok, an = tiny
    edit = HeadsMethod().fit(_ctx(model, tok, an, tmp_path, heads=[(0, 1), (1, 3)])).edit
    assert edit.info["heads"] == [[0, 1], [1, 3]]
    assert [op.index for op in edit.ops] == [list(range(16, 32)), list(range(48, 64))]
