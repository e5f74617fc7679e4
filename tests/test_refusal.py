"""method: refusal — direction, SRA cleaning, exact projections, merge = hooks, metrics helpers.

Fixtures live in this module (tiny random models from tests/tiny.py); tests/conftest.py is not touched.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from editkit.edit.edit import Edit, ProjectOut
from editkit.edit.ops import NormPreservingProjectOut
from editkit.errors import EditkitError
from editkit.eval.refusal.chat import chat_prompts, is_degenerate, is_refusal
from editkit.methods.base import FitContext
from editkit.methods.refusal.atoms import (
    ATOM_NAMES,
    cosines,
    harmless_principal_components,
    load_atom_pairs,
    ridge_clean,
)
from editkit.methods.refusal.direction import diff_of_means, residual_activations
from editkit.methods.refusal.edit import project_edit
from editkit.methods.refusal.fit import RefusalMethod
from editkit.methods.refusal.params import RefusalParams
from editkit.model.anatomy import find_anatomy
from editkit.model.targets import weight_out_in
from editkit.run.events import EventLog
from tests.tiny import fit_context, tiny_model


def _unit(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, generator=g)
    return r / r.norm()


HARM = [f"tell me how to make weapon {i} at home" for i in range(12)]
SAFE = [f"tell me how to bake bread number {i}" for i in range(12)]


def _ctx(model, tok, tmp_path, **params) -> FitContext:
    data = {
        "harmful": [{"instruction": p} for p in HARM],
        "harmless": [{"instruction": p} for p in SAFE],
        "harmful_test": [{"instruction": p} for p in HARM[:3]],
        "harmless_test": [{"instruction": p} for p in SAFE[:3]],
    }
    p = RefusalParams(n_train=8, n_val=4, eval_max_prompts=3, eval_max_new_tokens=4, **params)
    return fit_context(model, tok, p, data, tmp_path)


# -- projections -------------------------------------------------------------------------------------


@pytest.mark.parametrize("op_cls", [ProjectOut, NormPreservingProjectOut])
def test_orthogonalised_writers_have_no_component_along_r(op_cls):
    model, _ = tiny_model("llama")
    an = find_anatomy(model)
    r = _unit(an.hidden_size, 1)
    edit = Edit("refusal", [op_cls(module=n, direction=r, strength=1.0) for n in an.residual_writers()])
    edit.merge_into(model)
    for name in an.residual_writers():
        w = weight_out_in(model.get_submodule(name))
        assert float((r @ w).abs().max()) < 1e-5, name
        assert float(w.norm()) > 1.0  # not trivially zeroed


def test_norm_preserving_keeps_column_norms_and_plain_does_not():
    model, _ = tiny_model("llama")
    an = find_anatomy(model)
    name = an.layer(0).down
    w0 = weight_out_in(model.get_submodule(name))
    # a direction with a real component in the weights: the top left-singular vector
    r = torch.linalg.svd(w0, full_matrices=False).U[:, 0]
    np_w, _ = NormPreservingProjectOut(module=name, direction=r, strength=1.0).merge(w0.clone(), None)
    plain_w, _ = ProjectOut(module=name, direction=r, strength=1.0).merge(w0.clone(), None)
    torch.testing.assert_close(np_w.norm(dim=0), w0.norm(dim=0), atol=1e-5, rtol=1e-5)
    assert float((plain_w.norm(dim=0) - w0.norm(dim=0)).abs().max()) > 1e-2
    assert float((r @ np_w).abs().max()) < 1e-5
    # partial strength also keeps the norms (the rescale does not depend on s = 1)
    half, _ = NormPreservingProjectOut(module=name, direction=r, strength=0.5).merge(w0.clone(), None)
    torch.testing.assert_close(half.norm(dim=0), w0.norm(dim=0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("norm_preserving", [False, True])
def test_merged_equals_hooks_and_artifact_roundtrip(family, norm_preserving, tmp_path):
    model, tok = tiny_model(family)
    an = find_anatomy(model)
    p = RefusalParams(norm_preserving=norm_preserving, strength=0.9, strength_by_layer={1: 0.5})
    edit = project_edit(an, _unit(an.hidden_size, 3), p, {"layer": 0})
    assert len(edit.ops) == 2 * an.n_layers
    assert {op.strength for op in edit.ops} == {0.9, 0.5}
    edit.save(tmp_path / "edit")
    loaded = Edit.load(tmp_path / "edit")
    assert [op.kind for op in loaded.ops] == [op.kind for op in edit.ops]
    ids = tok(["The quick brown fox jumps over the lazy dog."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = model(ids).logits
        with loaded.applied(model):
            hooked = model(ids).logits
        merged_model = copy.deepcopy(model)
        edit.merge_into(merged_model)
        merged = merged_model(ids).logits
    assert float((hooked - base).abs().max()) > 1e-3  # the edit does something
    assert float((hooked - merged).abs().max()) <= 1e-4


def test_embeddings_refused_when_tied_and_edited_when_untied(tmp_path):
    model, tok = tiny_model("qwen2")  # tied
    with pytest.raises(EditkitError, match="ties its input embeddings"):
        project_edit(find_anatomy(model), _unit(64, 0), RefusalParams(embeddings=True))
    model, tok = tiny_model("llama")  # untied
    an = find_anatomy(model)
    for norm in (False, True):
        edit = project_edit(an, _unit(64, 0), RefusalParams(embeddings=True, norm_preserving=norm))
        assert edit.ops[0].module == an.embed
        ids = tok(["Paris is the capital of France."], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            with edit.applied(model):
                hooked = model(ids).logits
            m2 = copy.deepcopy(model)
            edit.merge_into(m2)
            assert float((hooked - m2(ids).logits).abs().max()) <= 1e-4


# -- SRA ---------------------------------------------------------------------------------------------


def test_sra_is_orthogonal_to_every_atom_as_alpha_goes_to_zero():
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(5, 64, generator=g, dtype=torch.float64)
    atoms = atoms / atoms.norm(dim=1, keepdim=True)
    r = _unit(64, 9).double() + 0.8 * atoms[0] + 0.5 * atoms[3]
    r = r / r.norm()
    before = (atoms @ r).abs().max()
    assert before > 0.3
    prev = float("inf")
    for alpha in (1.0, 1e-2, 1e-4, 1e-8):
        out = ridge_clean(r, atoms, alpha)
        assert abs(float(out.norm()) - 1.0) < 1e-12
        worst = float((atoms @ out).abs().max())
        assert worst <= prev + 1e-12
        prev = worst
    assert prev < 1e-7
    # large alpha leaves r (almost) alone; no atoms leaves it exactly alone
    assert float(ridge_clean(r, atoms, 1e6) @ r) > 0.9999
    torch.testing.assert_close(ridge_clean(r, atoms[:0], 0.0), r)
    cos = cosines(prev * 0 + out, atoms, [f"a{i}" for i in range(5)])
    assert set(cos) == {f"a{i}" for i in range(5)} and max(abs(v) for v in cos.values()) < 1e-4


def test_builtin_atoms_are_paired_prompt_sets():
    for name in ATOM_NAMES:
        pos, neg = load_atom_pairs(name)
        assert len(pos) == len(neg) == 16
        assert len(set(pos)) == 16 and not set(pos) & set(neg)
    with pytest.raises(EditkitError, match="unknown concept atom 'maths'"):
        load_atom_pairs("maths")


# -- direction -----------------------------------------------------------------------------------------


def test_diff_of_means_recovers_a_planted_direction():
    model, tok = tiny_model("llama")
    an = find_anatomy(model)
    u = _unit(an.hidden_size, 5)
    planted = {"on": False}

    def add(mod, args, out):  # layer 0 writes 4·u into the residual stream of 'harmful' prompts
        if not planted["on"]:
            return out
        hs = out[0] if isinstance(out, tuple) else out
        hs = hs + 4.0 * u
        return (hs, *out[1:]) if isinstance(out, tuple) else hs

    h = model.get_submodule(an.layers[0].prefix).register_forward_hook(add)
    try:
        planted["on"] = True
        a_h = residual_activations(model, tok, HARM)
        planted["on"] = False
        a_s = residual_activations(model, tok, SAFE)
    finally:
        h.remove()
    assert a_h.dtype == torch.float64 and a_h.shape == (12, an.n_layers, an.hidden_size)
    d = diff_of_means(a_h, a_s)
    assert float(d[1] @ u.double()) > 0.97  # entering layer 1: the plant dominates the text difference
    # entering layer 0 there is only the embedding of the last token — the same template token for every
    # prompt — so the difference is exactly zero (why layer search starts at min_layer = 1)
    assert float(d[0].abs().max()) == 0.0
    assert abs(float(d[1].norm()) - 1.0) < 1e-12
    # projecting off the harmless mean leaves a direction orthogonal to that mean
    d2 = diff_of_means(a_h, a_s, project_off_neg_mean=True)
    m = a_s.mean(0)
    assert float(((d2 * m).sum(-1) / m.norm(dim=-1)).abs().max()) < 1e-10


def test_fit_records_where_and_control_has_same_structure(tmp_path):
    model, tok = tiny_model("llama")
    ctx = _ctx(model, tok, tmp_path, ridge_alpha=1e-6)
    method = RefusalMethod()
    base = method.evaluate(ctx, "base")
    assert {"refusal_rate", "over_refusal_rate", "harmless_kl"} <= set(base) and base["harmless_kl"] == 0.0
    assert set(base) - {"refusal_rate", "over_refusal_rate", "harmless_kl"} <= {"harmless_kl_answered"}
    edit = method.fit(ctx).edit
    info = edit.info
    assert info["layer"] == 1 and set(info["layer_scores"]) == {"1"}  # 2 layers: only layer 1 is a candidate
    assert info["sra"] and set(info["atom_cosines_after"]) == set(ATOM_NAMES)
    assert max(abs(v) for v in info["atom_cosines_after"].values()) < 1e-3
    assert max(abs(v) for v in info["atom_cosines_before"].values()) > 0.01
    assert [op.module for op in edit.ops] == find_anatomy(model).residual_writers()
    control = method.control(ctx, edit)
    assert [(op.module, op.kind, op.strength) for op in control.ops] == [
        (op.module, op.kind, op.strength) for op in edit.ops
    ]
    assert abs(float(control.ops[0].direction @ edit.ops[0].direction)) < 0.5
    with edit.applied(model):
        edited = method.evaluate(ctx, "edited")
    assert edited["harmless_kl"] > 0.0
    assert (tmp_path / "samples-base.json").exists()
    plain = RefusalMethod().fit(_ctx(model, tok, tmp_path, sra=False)).edit
    assert not plain.info["sra"] and "atom_cosines_after" not in plain.info


def test_harmless_principal_components_are_the_top_variance_directions():
    g = torch.Generator().manual_seed(3)
    # 40 prompts, 2 layers, width 16: layer 0 varies most along e0 then e1, layer 1 along e5 then e2
    x = 0.01 * torch.randn(40, 2, 16, generator=g, dtype=torch.float64)
    x[:, 0, 0] += 5 * torch.randn(40, generator=g, dtype=torch.float64)
    x[:, 0, 1] += 2 * torch.randn(40, generator=g, dtype=torch.float64)
    x[:, 1, 5] += 4 * torch.randn(40, generator=g, dtype=torch.float64)
    x[:, 1, 2] += 1 * torch.randn(40, generator=g, dtype=torch.float64)
    pcs = harmless_principal_components(x + 7.0, 2)  # a shared offset is not a component
    assert pcs.shape == (2, 2, 16)
    assert [int(pcs[0, i].abs().argmax()) for i in range(2)] == [0, 1]
    assert [int(pcs[1, i].abs().argmax()) for i in range(2)] == [5, 2]
    torch.testing.assert_close(pcs[1] @ pcs[1].T, torch.eye(2, dtype=torch.float64))
    assert harmless_principal_components(x[:3], 8).shape == (2, 2, 16)  # 3 prompts span 2 directions


def test_fit_with_pca_atoms_cleans_against_the_harmless_components(tmp_path):
    model, tok = tiny_model("qwen2")
    edit = RefusalMethod().fit(_ctx(model, tok, tmp_path, atoms=[], pca_atoms=3, ridge_alpha=1e-6)).edit
    info = edit.info
    assert info["sra"] and info["atoms"] == ["pc1", "pc2", "pc3"]
    assert max(abs(v) for v in info["atom_cosines_after"].values()) < 1e-3
    assert max(abs(v) for v in info["atom_cosines_before"].values()) > 0.01
    with pytest.raises(ValueError, match="pca_atoms"):
        RefusalParams(pca_atoms=-1)


def test_harmless_kl_answered_is_the_kl_over_prompts_the_starting_model_answered(tmp_path):
    from editkit.eval.refusal.chat import chat_first_token_logprobs, generate, kl_rows
    from editkit.eval.refusal.metrics import refusal_metrics

    model, tok = tiny_model("llama")
    ctx = _ctx(model, tok, tmp_path)
    refusal_metrics(ctx, None, "harmless_test", 3, 4, "base")
    outs = generate(model, tok, SAFE[:3], max_new_tokens=4, batch_size=3)
    assert ctx.baseline["refusal_base_answered"].tolist() == [not is_refusal(o) for o in outs]
    ctx.baseline["refusal_base_answered"] = torch.tensor(
        [True, False, True]
    )  # as if the middle prompt had been refused
    base_lp = chat_first_token_logprobs(model, tok, SAFE[:3])
    r = torch.nn.functional.normalize(torch.randn(find_anatomy(model).hidden_size), dim=0)
    edit = project_edit(find_anatomy(model), r, RefusalParams())
    with edit.applied(model):
        m = refusal_metrics(ctx, None, "harmless_test", 3, 4, "edited")
        kl = kl_rows(base_lp, chat_first_token_logprobs(model, tok, SAFE[:3]))
    assert float(kl[1]) > 0 and abs(m["harmless_kl"] - float(kl.mean())) < 1e-6
    assert abs(m["harmless_kl_answered"] - float((kl[0] + kl[2]) / 2)) < 1e-6
    ctx.baseline["refusal_base_answered"] = torch.tensor(
        [False, False, False]
    )  # nothing answered: no such number
    with edit.applied(model):
        assert "harmless_kl_answered" not in refusal_metrics(ctx, None, "harmless_test", 3, 4, "edited")


def test_edit_from_auto_searches_direction_layer_and_first_edited_layer(tmp_path):
    model, tok = tiny_model("llama")
    an = find_anatomy(model)
    info = RefusalMethod().fit(_ctx(model, tok, tmp_path, edit_from="auto", kl_limit=10.0)).edit.info
    grid = info["window_scores"]
    assert set(grid) == {"1:0", "1:1"}  # layer 1 (the only candidate) x floor({0, .5, .75, 1} * 1)
    want = min(grid, key=lambda k: grid[k]["refusal_log_odds"])  # every KL is under the limit of 10
    assert f"{info['layer']}:{info['edit_from']}" == want
    assert info["edited_layers"] == list(range(info["edit_from"], an.n_layers))
    # a fixed edit_from edits only the writers from that layer on, with the same direction
    auto = RefusalMethod().fit(_ctx(model, tok, tmp_path, edit_from="auto", kl_limit=10.0)).edit
    fixed = RefusalMethod().fit(_ctx(model, tok, tmp_path, edit_from=1)).edit
    assert [op.module for op in fixed.ops] == list(an.layer(1).residual_writers)
    assert fixed.info["edited_layers"] == [1] and "window_scores" not in fixed.info
    assert torch.equal(fixed.ops[0].direction, auto.ops[0].direction)
    with pytest.raises(EditkitError, match="method.edit_from: 5 leaves no layer to edit"):
        RefusalMethod().fit(_ctx(model, tok, tmp_path, edit_from=5))
    with pytest.raises(EditkitError, match="method.edit_from_fracs: no start"):
        RefusalMethod().fit(
            _ctx(model, tok, tmp_path, edit_from="auto", edit_from_fracs=[1.0], edit_layers=[0])
        )
    for bad in ("sometimes", -1, True):
        with pytest.raises(ValueError, match="must be a layer index >= 0 or 'auto'"):
            RefusalParams(edit_from=bad)


def test_strength_auto_weakens_an_over_limit_layer_until_its_val_kl_fits(tmp_path):
    from editkit.eval.refusal.chat import chat_first_token_logprobs, kl_rows

    model, tok = tiny_model("llama")
    an = find_anatomy(model)
    full = RefusalMethod().fit(_ctx(model, tok, tmp_path, sra=False)).edit
    k1 = full.info["layer_scores"]["1"]["kl"]
    assert full.info["strength"] == 1.0 and "strength_scores" not in full.info and k1 > 0
    # generous limit: full strength already fits, nothing is weakened
    roomy = RefusalMethod().fit(_ctx(model, tok, tmp_path, sra=False, strength="auto", kl_limit=10 * k1)).edit
    assert roomy.info["strength"] == 1.0 and roomy.info["strength_scores"] == {}
    # a limit layer 1 breaks at full strength: s is searched in (0, 1), 4 tries, each inside the bracket
    limit = 0.5 * k1
    edit = RefusalMethod().fit(_ctx(model, tok, tmp_path, sra=False, strength="auto", kl_limit=limit)).edit
    scores = edit.info["strength_scores"]
    tried = [(float(k.split("@")[1]), v["kl"]) for k, v in scores.items()]
    assert tried[0][0] == round(math.sqrt(limit / k1), 4)  # first guess: KL ∝ s²
    lo, hi = 0.0, 1.0
    for s_i, kl_i in tried:  # each try lies inside the bracket and moves the side the KL says
        assert lo < s_i < hi
        lo, hi = (s_i, hi) if kl_i <= limit else (lo, s_i)
    assert len(tried) == 4 and lo > 0  # something fits
    # the pick is the usual rule over everything scored: lowest refusal log-odds within the limit (on a
    # random tiny model that need not be the largest strength)
    fits = {s_i: scores[f"1@{s_i}"]["refusal_log_odds"] for s_i, kl_i in tried if kl_i <= limit}
    s = edit.info["strength"]
    assert s == min(fits, key=fits.get) and {op.strength for op in edit.ops} == {s}
    kls = [scores[f"1@{s}"]["kl"]]
    assert edit.info["layer_scores"]["1"] == {**edit.info["strength_scores"][f"1@{s}"], "strength": s}
    # the recorded KL is the validation KL of exactly that edit (rows 8..11, after the 8 training rows)
    base = chat_first_token_logprobs(model, tok, SAFE[8:12])
    with edit.applied(model):
        kl = float(kl_rows(base, chat_first_token_logprobs(model, tok, SAFE[8:12])).mean())
    assert abs(kl - kls[-1]) < 1e-4
    assert [op.module for op in edit.ops] == an.residual_writers()
    for bad in ("sometimes", 1.5, -0.1, True):
        with pytest.raises(ValueError, match="must be a number in \\[0, 1\\] or 'auto'"):
            RefusalParams(strength=bad)
    with pytest.raises(ValueError, match="strength_steps"):
        RefusalParams(strength_steps=0)


def test_sra_fits_plain_abliteration_beside_it_and_auto_picks_by_the_validation_rule(tmp_path):
    from editkit.methods.refusal.search import pick as _pick

    model, tok = tiny_model("llama")
    kw = dict(ridge_alpha=1e-6, kl_limit=10.0)
    plain = RefusalMethod().fit(_ctx(model, tok, tmp_path, sra=False, **kw)).edit
    fitted = RefusalMethod().fit(_ctx(model, tok, tmp_path, **kw))
    sra = fitted.edit
    comp = sra.info["comparison"]
    assert sra.info["sra"] and comp["direction"] == "plain" and comp["strength"] == 1.0
    # the comparison is exactly the plain fit at the same layer (same direction, same ops, same val score)
    ((name, other),) = fitted.comparisons.items()
    assert name == "plain abliteration" and other.info == {"comparison": comp}
    assert [(o.module, o.strength) for o in other.ops] == [(o.module, o.strength) for o in plain.ops]
    torch.testing.assert_close(other.ops[0].direction, plain.ops[0].direction)
    assert {k: comp[k] for k in ("refusal_log_odds", "kl")} == plain.info["layer_scores"]["1"]
    assert float(other.ops[0].direction @ sra.ops[0].direction) < 0.999  # SRA moved it
    # sra: auto keeps whichever the rule prefers, and the other becomes the comparison
    auto = RefusalMethod().fit(_ctx(model, tok, tmp_path, sra="auto", **kw)).edit
    mine = {"sra": sra.info["layer_scores"]["1"], "plain": plain.info["layer_scores"]["1"]}
    want = _pick(["sra", "plain"], mine, 10.0)
    assert auto.info["sra"] == (want == "sra")
    assert auto.info["comparison"]["direction"] == ("plain" if want == "sra" else "sra")
    kept = sra if want == "sra" else plain
    torch.testing.assert_close(auto.ops[0].direction, kept.ops[0].direction)
    # off: no comparison fitted, none evaluated
    off = RefusalMethod().fit(_ctx(model, tok, tmp_path, compare_plain=False, **kw))
    assert "comparison" not in off.edit.info and off.comparisons == {}


def test_apply_with_sra_auto_evaluates_the_comparison_and_the_card_shows_both(tmp_path, tiny_dir):
    import json

    from editkit import apply_recipe

    for name, prompts in (("harmful", HARM), ("harmless", SAFE)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"instruction": p} for p in prompts]))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"""name: tiny-refusal
model: {tiny_dir("llama")}
method:
  name: refusal
  n_train: 8
  n_val: 4
  sra: auto
  strength: auto
  ridge_alpha: 0.000001
  eval_max_prompts: 3
  eval_max_new_tokens: 4
data:
  heldout: []
  sets:
    harmful: {{source: {tmp_path / "harmful.json"}}}
    harmless: {{source: {tmp_path / "harmless.json"}}}
    harmful_test: {{source: {tmp_path / "harmful.json"}}}
    harmless_test: {{source: {tmp_path / "harmless.json"}}}
eval:
  blimp: false
  robustness: false
  control: false
"""
    )
    res = apply_recipe(recipe, out=tmp_path / "run")
    ((name, comp),) = res.metrics["comparisons"].items()
    kept = "SRA" if res.edit.info["sra"] else "plain"
    assert name == ("plain abliteration" if kept == "SRA" else "SRA")
    assert set(comp["metrics"]) == set(res.metrics["edited"]) and comp["info"] == {
        "comparison": res.edit.info["comparison"]
    }
    assert (tmp_path / "run" / f"samples-{name.replace(' ', '-')}.json").exists()
    assert res.metrics["export"]["max_abs_logit_diff"] <= 1e-4  # the export is the kept edit
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert f"### Compared with {name}" in card


def test_evaluate_counts_its_work_for_the_stage_progress_bar(tmp_path):
    model, tok = tiny_model("llama")
    ctx = _ctx(model, tok, tmp_path)
    method = RefusalMethod()
    # 3 harmful + 3 harmless generations, 3 harmless first-token forwards (markers: no judge pass)
    assert method.evaluation_units(ctx) == 9
    counted: list[int] = []
    ctx.on_units = counted.append
    method.evaluate(ctx, "base")
    assert sum(counted) == 9 and len(counted) == 3  # one generation batch per set, then the KL forward
    ctx.on_units = None
    ctx.count(5)  # outside a stage: nothing to report to
    assert sum(counted) == 9


def test_fit_rejects_missing_sets_and_bad_layer(tmp_path):
    model, tok = tiny_model("llama")
    ctx = _ctx(model, tok, tmp_path, harmful="nope")
    with pytest.raises(EditkitError, match="data.sets.nope"):
        RefusalMethod().fit(ctx)
    with pytest.raises(EditkitError, match="method.layer: 7 is out of range"):
        RefusalMethod().fit(_ctx(model, tok, tmp_path, layer=7))


# -- refusal markers -----------------------------------------------------------------------------------


def test_refusal_markers_and_degenerate_outputs():
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("As an AI, I will not do that")
    assert is_refusal("")  # empty counts as refusal
    assert is_refusal("the the the the the the the the the the the the the the the the the the the the the")
    assert is_degenerate("ok")
    assert not is_refusal("Sure! Here is a recipe for chocolate cake: mix flour, sugar and eggs.")


def test_chat_prompts_fall_back_without_a_template():
    _, tok = tiny_model("llama")
    assert chat_prompts(tok, ["hi"]) == ["User: hi\nAssistant:"]


@pytest.mark.slow
def test_demo_direction_with_sra_moves_away_from_atoms(demo_model_dir, shared_data, tmp_path):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    harm = json.loads((shared_data / "refusal" / "harmful_train.json").read_text())[:16]
    safe = json.loads((shared_data / "refusal" / "harmless_train.json").read_text())[:16]
    ctx = FitContext(
        model=model,
        tokenizer=tok,
        anatomy=find_anatomy(model),
        params=RefusalParams(layer=12, n_train=12, n_val=4, atoms=["math", "list"]),
        data={"harmful": harm, "harmless": safe},
        events=EventLog(tmp_path / "events.jsonl", "t"),
        run_dir=tmp_path,
    )
    info = RefusalMethod().fit(ctx).edit.info
    assert info["layer"] == 12
    for atom in ("math", "list"):
        assert abs(info["atom_cosines_after"][atom]) < abs(info["atom_cosines_before"][atom])
