"""neurons: IG completeness, act×grad, selection/overlap, erase export == hook, CNL fit on a tiny model."""

from __future__ import annotations

import copy

import pytest
import torch

from editkit.eval.pairwise import encode_prompt_answers
from editkit.localize.attribution import NeuronGates, answer_objective, neuron_attributions
from editkit.methods.base import FitContext
from editkit.methods.neurons.fit import (
    NeuronsMethod,
    dataset_neurons,
    kept_per_sample,
    neuron_edit,
    overlap_stats,
)
from editkit.methods.neurons.params import NeuronsParams
from editkit.model.anatomy import find_anatomy
from editkit.run.events import NullEventLog
from tests.tiny import tiny_model

ITEMS = [
    {"id": "a", "prompt": "Two plus three is", "correct": " five", "incorrect": " seven"},
    {"id": "b", "prompt": "Paris is the capital of", "correct": " France", "incorrect": " Spain"},
    {"id": "c", "prompt": "Hot is the opposite of", "correct": " cold", "incorrect": " down"},
    {"id": "d", "prompt": "Seven minus four is", "correct": " three", "incorrect": " five"},
]


@pytest.fixture
def tiny():
    model, tok = tiny_model("llama")
    return model, tok, find_anatomy(model)


def _objective(model, tok, an, items, gates_by_layer, target="prob"):
    """F for each item with fixed gates per layer ({layer: [I] tensor}); other layers untouched."""
    enc = encode_prompt_answers(tok, [i["prompt"] for i in items], [i["correct"] for i in items])
    with torch.no_grad(), NeuronGates(model, an) as ng:
        for li, g in gates_by_layer.items():
            ng.gates[li] = g.expand(len(items), -1)
        return answer_objective(model, enc, target)


@pytest.mark.parametrize("target", ["logprob", "prob"])
def test_ig_joint_completeness(tiny, target):
    model, tok, an = tiny
    attr = neuron_attributions(model, tok, an, ITEMS, method="ig", steps=64, target=target, batch_rows=100)
    assert attr.shape == (4, an.n_layers, an.intermediate_size)
    zeros = {li: torch.zeros(an.intermediate_size) for li in range(an.n_layers)}
    diff = _objective(model, tok, an, ITEMS, {}, target) - _objective(model, tok, an, ITEMS, zeros, target)
    total = attr.sum(dim=(1, 2))
    assert (diff.abs() > 1e-3 * diff.abs().max()).all()  # a real difference to explain, every item
    # Σ IG = F(1) − F(0) up to the m-step midpoint-rule error
    assert (total - diff).abs().max() <= 1e-2 * diff.abs().max(), (total, diff)


def test_ig_layer_scope_completeness_per_layer(tiny):
    model, tok, an = tiny
    attr = neuron_attributions(
        model, tok, an, ITEMS, method="ig", steps=48, target="logprob", scope="layer", batch_rows=64
    )
    base = _objective(model, tok, an, ITEMS, {}, "logprob")
    for li in range(an.n_layers):
        off = _objective(model, tok, an, ITEMS, {li: torch.zeros(an.intermediate_size)}, "logprob")
        assert torch.allclose(attr[:, li].sum(dim=1), base - off, rtol=1e-2, atol=1e-5), li


def test_act_x_grad_is_activation_times_gradient(tiny):
    model, tok, an = tiny
    attr = neuron_attributions(model, tok, an, ITEMS[:2], method="act_x_grad", target="logprob")
    enc = encode_prompt_answers(tok, [i["prompt"] for i in ITEMS[:2]], [i["correct"] for i in ITEMS[:2]])
    acts = {}

    def grab(li):
        def pre(mod, args):
            x = args[0]
            x.retain_grad()
            acts[li] = x

        return pre

    hs = [
        model.get_submodule(an.layer(li).down).register_forward_pre_hook(grab(li))
        for li in range(an.n_layers)
    ]
    try:
        answer_objective(model, enc, "logprob").sum().backward()
    finally:
        for h in hs:
            h.remove()
        model.zero_grad(set_to_none=True)
    for li in range(an.n_layers):
        ref = (acts[li] * acts[li].grad).sum(dim=1)  # summed over positions: one gate per neuron
        assert torch.allclose(attr[:, li], ref.detach(), atol=1e-6)


def test_selection_and_overlap_exact():
    attr = torch.zeros(3, 2, 4)
    attr[0, 0] = torch.tensor([1.0, 0.2, 0.5, -1.0])
    attr[1, 0] = torch.tensor([0.1, 1.0, 0.4, 0.0])
    attr[2, 1] = torch.tensor([0.0, 0.0, 2.0, 0.7])
    keep = kept_per_sample(attr, threshold=0.3, top_q=None)
    assert keep.nonzero().tolist() == [[0, 0, 0], [0, 0, 2], [1, 0, 1], [1, 0, 2], [2, 1, 2], [2, 1, 3]]
    assert dataset_neurons(keep, 0.5) == {(0, 2)}  # the only neuron kept by 2 of 3 samples
    assert dataset_neurons(keep, 0.3) == {(0, 0), (0, 1), (0, 2), (1, 2), (1, 3)}
    top1 = kept_per_sample(attr, threshold=0.3, top_q=1)
    assert top1.nonzero().tolist() == [[0, 0, 0], [1, 0, 1], [2, 1, 2]]
    s = overlap_stats({(0, 1), (0, 2), (1, 5), (2, 2)}, {(0, 2), (2, 2), (3, 3)})
    assert s == {"n_a": 4, "n_b": 3, "intersection": 2, "overlap_rate": 0.5, "iou": 0.4}


def test_neuron_erase_export_equals_hook(tiny):
    model, tok, an = tiny
    edit = neuron_edit(an, [(0, 3), (0, 77), (1, 5), (1, 127)], scale=0.0)
    ids = tok("Two plus three is five.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = model(ids).logits
        with edit.applied(model):
            hooked = model(ids).logits
    merged = copy.deepcopy(model)
    edit.merge_into(merged)
    with torch.no_grad():
        exported = merged(ids).logits
    assert torch.count_nonzero(merged.get_submodule(an.layer(1).down).weight[:, [5, 127]]) == 0
    assert (hooked - exported).abs().max() <= 1e-5
    assert (hooked - base).abs().max() > 1e-4
    enhance = neuron_edit(an, [(1, 5)], scale=2.0)
    m2 = copy.deepcopy(model)
    enhance.merge_into(m2)
    with torch.no_grad(), enhance.applied(model):
        assert (model(ids).logits - m2(ids).logits).abs().max() <= 1e-5


def _ctx(model, tok, an, tmp_path, data, **params):
    return FitContext(
        model=model,
        tokenizer=tok,
        anatomy=an,
        params=NeuronsParams(**params),
        data=data,
        events=NullEventLog(),
        run_dir=tmp_path,
        seed=0,
    )


def test_cnl_fit_on_halves_and_on_named_sets(tiny, tmp_path):
    model, tok, an = tiny
    items = ITEMS * 2
    ctx = _ctx(
        model, tok, an, tmp_path, {"target_train": items}, steps=4, samples=8, threshold=0.2, min_share=0.5
    )
    edit = NeuronsMethod().fit(ctx).edit
    info = edit.info
    assert info["datasets"] == {"half0": 4, "half1": 4}
    stats = info["overlap"]["half0~half1"]
    assert stats["intersection"] == info["n_common"]
    assert info["n_chosen"] == len(edit.info["neurons"]) == min(info["n_common"], 200) > 0
    assert sum(info["per_layer"]) == info["n_chosen"]
    # the control erases as many random neurons in the same layers, none of the chosen ones
    ctrl = NeuronsMethod().control(ctx, edit)
    chosen = {tuple(n) for n in edit.info["neurons"]}
    picked = [tuple(n) for n in ctrl.info["neurons"]]
    assert len(picked) == len(chosen) and not set(picked) & chosen
    assert sorted(li for li, _ in picked) == sorted(li for li, _ in chosen)

    capped = (
        NeuronsMethod()
        .fit(
            _ctx(
                model,
                tok,
                an,
                tmp_path,
                {"a": ITEMS[:2], "b": ITEMS[2:]},
                datasets=["a", "b"],
                attribution="act_x_grad",
                top_q=40,
                min_share=0.5,
                max_neurons=3,
            )
        )
        .edit
    )
    assert capped.info["datasets"] == {"a": 2, "b": 2} and capped.info["n_chosen"] <= 3
    assert set(capped.info["overlap"]) == {"a~b", "b~a"}


def test_explicit_neurons_and_bad_sets(tiny, tmp_path):
    from editkit.errors import EditkitError

    model, tok, an = tiny
    edit = NeuronsMethod().fit(_ctx(model, tok, an, tmp_path, {}, neurons=[(1, 4), (0, 2)])).edit
    assert edit.info["neurons"] == [[1, 4], [0, 2]]
    with pytest.raises(EditkitError, match="out of range"):
        NeuronsMethod().fit(_ctx(model, tok, an, tmp_path, {}, neurons=[(2, 0)]))
    with pytest.raises(EditkitError, match="not a data.sets entry"):
        NeuronsMethod().fit(_ctx(model, tok, an, tmp_path, {"a": ITEMS}, datasets=["a", "zz"]))
