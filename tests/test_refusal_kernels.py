"""method: refusal — kernels (per-layer weights for attention and MLP writers), fractional direction index,
row/column norms, the null-space update, and the Optuna search (seeded, resumable from its journal).

Tiny random models from tests/tiny.py; exact assertions (torch.equal) where the maths is the same map.
"""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from editkit.edit.edit import Edit
from editkit.edit.ops import NormPreservingProjectOut, ProjectOut, WriterProjectOut
from editkit.export.write import logits_of, probe_inputs
from editkit.methods.refusal.direction import direction_at, project_off
from editkit.methods.refusal.edit import kernel_edit, project_edit
from editkit.methods.refusal.fit import RefusalMethod
from editkit.methods.refusal.nullspace import null_space_update, principal_subspace, writer_inputs
from editkit.methods.refusal.optuna_search import (
    JOURNAL,
    confirmation_candidates,
    confirmed_pick,
    grid_params,
    kernel_of,
)
from editkit.methods.refusal.params import RefusalParams
from editkit.methods.refusal.profile import FreeProfile, TentProfile, layer_weights
from editkit.methods.refusal.search import RefusalSearch
from editkit.model.anatomy import find_anatomy
from editkit.model.targets import weight_out_in
from tests.test_refusal import HARM, SAFE, _ctx
from tests.tiny import tiny_model


def _unit(n: int, seed: int) -> torch.Tensor:
    r = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    return r / r.norm()


def _hooked_logits(model, edit: Edit, x) -> torch.Tensor:
    """Logits with every op's own hook (not the merged-weight swap Edit.apply prefers)."""
    handles = []
    for op in edit.ops:
        handles += op.hook(model.get_submodule(op.module))
    try:
        return logits_of(model, x)
    finally:
        for h in handles:
            h.remove()


# -- profiles and directions ---------------------------------------------------------------------------


def test_tent_profile_weights():
    t = TentProfile(peak=1.2, position=3.0, floor=0.4, width=2.0)
    assert layer_weights(t, 7) == pytest.approx([0.0, 0.4, 0.8, 1.2, 0.8, 0.4, 0.0], abs=1e-12)
    flat = TentProfile(peak=0.7, position=6.0, floor=0.7, width=4.0)  # the grid optimum from layer 2 on
    assert layer_weights(flat, 7) == [0.0, 0.0, 0.7, 0.7, 0.7, 0.7, 0.7]
    with pytest.raises(ValueError, match="needs 3 values"):
        layer_weights(FreeProfile(values=[1.0, 1.0]), 3)
    with pytest.raises(ValueError, match="values must be in"):
        FreeProfile(values=[1.0, 2.5])


def test_fractional_index_interpolates_and_is_exact_at_integers():
    dirs = torch.stack([_unit(16, i).double() for i in range(4)])
    for li in range(4):
        assert torch.equal(direction_at(dirs, float(li)), dirs[li])
    mid = direction_at(dirs, 1.25)
    want = 0.75 * dirs[1] + 0.25 * dirs[2]
    assert torch.allclose(mid, want / want.norm(), atol=1e-15) and abs(float(mid.norm()) - 1) < 1e-12
    with pytest.raises(ValueError, match="out of range"):
        direction_at(dirs, 3.5)
    m = _unit(16, 9).double()
    assert abs(float(project_off(dirs[0], m) @ m)) < 1e-14


# -- the ops: hook form ≡ merged form ----------------------------------------------------------------


def _variant_edits(anatomy, model) -> dict[str, Edit]:
    n, h = anatomy.n_layers, anatomy.hidden_size
    dirs = [_unit(h, 10 + li) for li in range(n)]
    attn, mlp = [1.3, 0.6], [0.0, 0.9]
    xs = writer_inputs(model, tiny_model("llama")[1], SAFE[:4], anatomy.residual_writers(), 4)
    nulls = {k: principal_subspace(x, 0.9) for k, x in xs.items()}

    def w(name):
        return weight_out_in(model.get_submodule(name))

    out = {}
    for norm in (False, "column", "row"):
        p = RefusalParams(norm_preserving=norm)
        out[f"kernel/{norm}"] = kernel_edit(anatomy, lambda li: dirs[li], attn, mlp, p)
        out[f"null/{norm}"] = kernel_edit(
            anatomy, lambda li: dirs[li], attn, mlp, p, nulls=nulls, weight_of=w
        )
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_hook_equals_merge_for_every_kernel_norm_and_null_space_variant(family):
    model, tok = tiny_model(family)
    an = find_anatomy(model)
    x = probe_inputs(tok, ["The quick brown fox jumps", "Paris is the capital of"])
    base = logits_of(model, x)
    for name, edit in _variant_edits(an, model).items():
        kinds = {type(op) for op in edit.ops}
        if name.startswith("null") or name.endswith("row"):
            assert kinds == {WriterProjectOut}, name
        hooked = _hooked_logits(model, edit, x)
        assert torch.equal(logits_of(model, x), base)
        assert not torch.allclose(hooked, base, atol=1e-4), name  # the variant changes the model
        m = tiny_model(family)[0]
        edit.merge_into(m)
        assert (logits_of(m, x) - hooked).abs().max() <= 1e-5, name
        with edit.applied(model):  # the evaluation path (merged weights swapped in) is the same map
            assert (logits_of(model, x) - logits_of(m, x)).abs().max() <= 1e-5, name


def test_kernel_of_all_ones_is_todays_full_strength_edit():
    model, tok = tiny_model("llama")
    an = find_anatomy(model)
    r = _unit(an.hidden_size, 3).double()
    for norm in (False, True):
        p = RefusalParams(norm_preserving=norm)
        today = project_edit(an, r, p, strength=1.0)
        ones = layer_weights(FreeProfile(values=[1.0] * an.n_layers), an.n_layers)
        kern = kernel_edit(an, lambda li: r, ones, ones, p)
        assert [(type(o), o.module, o.strength) for o in kern.ops] == [
            (type(o), o.module, o.strength) for o in today.ops
        ]
        assert {type(o) for o in kern.ops} == {NormPreservingProjectOut if norm else ProjectOut}
        a, b = tiny_model("llama")[0], tiny_model("llama")[0]
        today.merge_into(a)
        kern.merge_into(b)
        for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert na == nb and torch.equal(ta, tb), na
        x = probe_inputs(tok, ["Two plus three is"])
        assert torch.equal(logits_of(a, x), logits_of(b, x))


def test_a_zero_weight_leaves_the_writer_alone_and_mlp_may_be_off():
    model, _ = tiny_model("llama")
    an = find_anatomy(model)
    r = _unit(an.hidden_size, 4)
    e = kernel_edit(an, lambda li: r, [1.0, 0.0], [0.0, 0.0], RefusalParams())
    assert [op.module for op in e.ops] == [an.layer(0).o]


# -- the null space -----------------------------------------------------------------------------------


def test_null_space_update_leaves_harmless_writer_outputs_unchanged():
    model, tok = tiny_model("llama")
    an = find_anatomy(model)
    name = an.layer(1).down
    xs = writer_inputs(model, tok, SAFE[:2], [name], 4)[name]  # [n_tokens, 128]: fewer tokens than inputs
    assert xs.shape[0] < xs.shape[1]
    u = principal_subspace(xs, 1.0)  # the kept subspace covers every harmless input
    w = weight_out_in(model.get_submodule(name))
    r = _unit(an.hidden_size, 5)
    op = WriterProjectOut(module=name, direction=r, strength=1.0, update=null_space_update(w, r, u))
    w2, _ = op.merge(w.clone(), None)
    before, after = xs @ w.T, xs @ w2.T
    scale = before.abs().max()
    assert (after - before).abs().max() <= 1e-5 * scale
    # and the edit is not empty: an input outside the harmless span loses its r-component
    z = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(0))
    z_out = z - u @ (u.T @ z)
    assert float((w2 @ z_out) @ r) == pytest.approx(0.0, abs=1e-4 * float((w @ z_out).norm()))
    assert float(((w @ z_out) @ r).abs()) > 1e-3 * float((w @ z_out).norm())
    # keeping 90 % of the energy leaves a smaller subspace, and harmless outputs then do move
    assert principal_subspace(xs, 0.9).shape[1] < u.shape[1]


# -- the Optuna search ---------------------------------------------------------------------------------


def _search(tmp_path, trials=6, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    model, tok = tiny_model("llama")
    ctx = _ctx(model, tok, tmp_path, sra=False, search="optuna", trials=trials, startup_trials=3, **kw)
    return ctx, RefusalMethod().fit(ctx)


def _trials(edit, numbers=True):
    return [
        ((t["number"],) if numbers else ())
        + (t["state"], t["grid"], t["params"], t["refusal_log_odds"], t["kl"])
        for t in edit.info["trials"]
    ]


def test_optuna_search_is_deterministic_for_a_seed_and_starts_at_the_grid_optimum(tmp_path):
    ctx, a = _search(tmp_path / "a")
    _, b = _search(tmp_path / "b")
    assert _trials(a.edit) == _trials(b.edit) and len(_trials(a.edit)) == 6
    info = a.edit.info
    g = info["grid_optimum"]
    assert info["trials"][0]["params"] == {
        k: round(v, 4) for k, v in grid_params(g["layer"], None, 1.0, 2).items()
    }
    assert info["trials"][0]["refusal_log_odds"] == g["refusal_log_odds"]  # the same edit as the grid's
    assert len({json.dumps(t["params"], sort_keys=True) for t in info["trials"]}) == 6
    # confirmation: the grid optimum and the 3 lowest-KL trials at or below the grid's log-odds generated
    ok = [
        t
        for t in info["trials"]
        if t["state"] == "complete" and t["refusal_log_odds"] <= info["refusal_target"] and not t["grid"]
    ]
    ok.sort(key=lambda t: (t["kl"], t["refusal_log_odds"], t["number"]))
    conf = info["confirmed"]
    assert [c["number"] for c in conf] == [0] + [t["number"] for t in ok[:3]]
    assert all(0.0 <= c["refusal_rate"] <= 1.0 for c in conf)
    assert info["chosen_trial"] == confirmed_pick(conf)
    assert info["refusal_target"] == g["refusal_log_odds"]
    # each trial and each confirmation is a progress unit of the fit stage: it ends at total of total
    events = [json.loads(line) for line in (tmp_path / "a" / "events.jsonl").read_text().splitlines()]
    prog = [e for e in events if e.get("kind") == "progress" or e.get("type") == "progress"]
    assert prog and prog[-1]["done"] == prog[-1]["total"] == 1 + 6 + len(conf)
    # another seed searches other trials
    model, tok = tiny_model("llama")
    (tmp_path / "c").mkdir()
    ctx2 = _ctx(model, tok, tmp_path / "c", sra=False, search="optuna", trials=6, startup_trials=3)
    ctx2.seed = 7
    c = RefusalMethod().fit(ctx2)
    assert [t[3] for t in _trials(c.edit)][1:] != [t[3] for t in _trials(a.edit)][1:]


def test_without_confirmation_the_pick_is_the_log_odds_rule(tmp_path):
    _, res = _search(tmp_path, confirm=0)
    info = res.edit.info
    ok = [
        t
        for t in info["trials"]
        if t["state"] == "complete" and t["refusal_log_odds"] <= info["refusal_target"]
    ]
    assert (
        info["chosen_trial"] == min(ok, key=lambda t: (t["kl"], t["refusal_log_odds"], t["number"]))["number"]
    )
    assert "confirmed" not in info


def _t(number, kl, lo, rate=None, grid=False, state="complete"):
    row = {"number": number, "grid": grid, "kl": kl, "refusal_log_odds": lo, "state": state}
    return row if rate is None else row | {"refusal_rate": rate}


def test_confirmation_drops_a_trial_whose_generated_text_refuses_more_than_the_grid_optimums():
    # what happened on qwen-coder-1.5b: the log-odds rule's pick (trial 4: the grid's KL, better log-odds)
    # refused 5/32 validation prompts in generated text where the grid optimum refused 2/32
    trials = [
        _t(0, 0.0306, -3.356, grid=True),
        _t(4, 0.0306, -4.072),
        _t(6, 0.0214, -2.989),  # not eligible: log-odds above the target
        _t(9, 0.0250, -3.5),
        _t(11, 0.0290, -3.4),
        _t(12, 0.0100, -5.0, state="pruned"),
        _t(13, 0.0280, -3.9),
    ]
    summary = {"trials": trials, "refusal_target": -3.356}
    assert [t["number"] for t in confirmation_candidates(summary, 3)] == [0, 9, 13, 11]
    assert [t["number"] for t in confirmation_candidates(summary, 1)] == [0, 9]
    confirmed = [
        _t(0, 0.0306, -3.356, 0.0625, grid=True),
        _t(9, 0.0250, -3.5, 0.15625),  # lowest KL, but refuses more than the grid optimum: out
        _t(13, 0.0280, -3.9, 0.0625),  # as often as the grid optimum, at a lower KL: the pick
        _t(11, 0.0290, -3.4, 0.0),
    ]
    assert confirmed_pick(confirmed) == 13
    assert confirmed_pick([confirmed[0], confirmed[1]]) == 0  # only the grid optimum qualifies
    assert confirmed_pick(confirmed[1:]) == 11  # no grid trial: the lowest rate first
    assert confirmed_pick([_t(0, 0.0306, -3.356, 0.0625, grid=True), _t(4, 0.0306, -4.07, 0.15625)]) == 0


def test_the_picked_edit_is_the_picked_trials_kernel(tmp_path):
    ctx, res = _search(tmp_path)
    info = res.edit.info
    study = optuna.load_study(
        study_name="refusal",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / JOURNAL))
        ),
    )
    params = next(t.params for t in study.trials if t.number == info["chosen_trial"])
    index, attn, mlp = kernel_of(params)
    assert info["attn_weights"] == [round(w, 4) for w in layer_weights(attn, 2)]
    assert info["mlp_weights"] == [round(w, 4) for w in layer_weights(mlp, 2)]
    strengths = {op.module: op.strength for op in res.edit.ops}
    an = ctx.anatomy
    for li in range(2):
        assert strengths.get(an.layer(li).o, 0.0) == layer_weights(attn, 2)[li]
    if info["chosen_trial"] != 0:
        assert list(res.comparisons) == ["grid optimum"]
    assert [t["grid"] for t in info["trials"]] == [True] + [False] * 5


def test_a_resumed_search_continues_the_same_trials(tmp_path):
    _, whole = _search(tmp_path / "whole", trials=7)
    # a run killed after 4 finished trials and one running: the journal holds them; --resume finishes it
    model, tok = tiny_model("llama")
    (tmp_path / "cut").mkdir()
    ctx = _ctx(model, tok, tmp_path / "cut", sra=False, search="optuna", trials=4, startup_trials=3)
    RefusalMethod().fit(ctx)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "cut" / JOURNAL))
    )
    study = optuna.load_study(study_name="refusal", storage=storage)
    study.sampler = optuna.samplers.RandomSampler(seed=123)
    running = study.ask()  # started, never told: what a SIGKILL mid-trial leaves
    running.suggest_float("attn_peak", 0.5, 1.5)
    ctx = _ctx(model, tok, tmp_path / "cut", sra=False, search="optuna", trials=7, startup_trials=3)
    ctx.resume = True
    resumed = RefusalMethod().fit(ctx)
    assert _trials(resumed.edit, numbers=False) == _trials(whole.edit, numbers=False)
    assert [t["number"] for t in resumed.edit.info["trials"]] == [0, 1, 2, 3, 5, 6, 7]  # 4 failed
    assert resumed.edit.info["attn_weights"] == whole.edit.info["attn_weights"]
    states = [t.state for t in optuna.load_study(study_name="refusal", storage=storage).trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    # without --resume the journal starts afresh
    ctx.resume = False
    again = RefusalMethod().fit(ctx)
    assert _trials(again.edit) == _trials(whole.edit)
    fresh = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "cut" / JOURNAL))
    )
    assert len(optuna.load_study(study_name="refusal", storage=fresh).trials) == 7


def test_bad_kernel_and_search_values_are_one_line_errors():
    for bad, match in (
        ({"attn_profile": {"kind": "tent", "position": 1, "width": 0}}, "greater than 0"),
        ({"attn_profile": {"kind": "tent", "position": 1, "width": 1, "peak": 3}}, "less than or equal to 2"),
        ({"search": "bayes"}, "'grid' or 'optuna'"),
        ({"trials": 3, "startup_trials": 5}, "exceeds trials"),
        ({"null_space": 1.5}, "less than or equal to 1"),
        ({"norm_preserving": "diagonal"}, "column"),
        ({"search_space": {"attn_peak": [1.2, 0.5]}}, "low <= high"),
    ):
        with pytest.raises(ValueError, match=match):
            RefusalParams(**bad)


@pytest.mark.parametrize(
    "option",
    [
        {"harmless_mean_per_layer": True},
        {"norm_preserving": "row"},
        {"null_space": 0.9, "null_space_prompts": 4},
    ],
)
def test_the_grid_search_returns_the_edit_it_scored(option, tmp_path):
    """With per-layer harmless means, row norms or the null space the grid scores the kernel edit; the fit
    must return (and the run evaluate and export) that edit, not the plain projection of the same direction:
    its validation scores are the ones the fit logged."""
    model, tok = tiny_model("llama")
    ctx = _ctx(model, tok, tmp_path, sra=False, layer=1, strength=0.9, **option)
    res = RefusalMethod().fit(ctx)
    s = RefusalSearch(ctx, ctx.params)
    s.load_prompts()
    s.find_directions()
    s.prepare_null_space()
    s.prepare_scores()
    got = s.evaluate_edit(res.edit)
    assert got == s.evaluate_edit(s.grid_edit("plain", 1, None, 0.9))
    assert got == {k: res.edit.info["layer_scores"]["1"][k] for k in got}
    plain = project_edit(ctx.anatomy, s.direction("plain", 1), ctx.params, strength=0.9)
    assert s.evaluate_edit(plain) != got


@pytest.mark.parametrize("option", [{"harmless_mean_per_layer": True}, {"norm_preserving": "row"}])
def test_sra_with_a_kernel_option_fits_when_a_layer_has_no_separation(option, tmp_path):
    """SRA cleans every layer's direction for a kernel edit; the embeddings' output at the last prompt token
    (here, as with a chat template, the same for every prompt) has none to clean. That layer keeps a zero
    direction — its writers are left alone — instead of the fit failing as if the atoms spanned the
    direction (as it did on qwen-coder-1.5b with ``harmless_mean_per_layer``)."""
    model, tok = tiny_model("llama")
    ctx = _ctx(model, tok, tmp_path, sra=True, layer=1, strength=0.9, **option)
    s = RefusalSearch(ctx, ctx.params)
    s.load_prompts()
    s.find_directions()
    assert float(s.raw[0].norm()) == 0.0 and len(s.atom_names) == 5
    dirs = s.directions("sra")
    assert torch.equal(dirs[0], torch.zeros_like(dirs[0]))
    assert torch.equal(dirs[1], s.direction("sra", 1)) and abs(float(dirs[1].norm()) - 1.0) < 1e-12
    edit = RefusalMethod().fit(ctx).edit
    assert edit.info["sra"] is True and edit.info["layer"] == 1


def test_fixed_kernel_with_grid_search_is_that_edit(tmp_path):
    model, tok = tiny_model("llama")
    tent = {"kind": "tent", "peak": 1.0, "position": 1.0, "floor": 0.5, "width": 1.0}
    ctx = _ctx(
        model,
        tok,
        tmp_path,
        sra=False,
        direction_index=0.5,
        attn_profile=tent,
        mlp_profile={"kind": "free", "values": [0.0, 0.25]},
    )
    e = RefusalMethod().fit(ctx).edit
    an = ctx.anatomy
    assert {op.module: op.strength for op in e.ops} == {
        an.layer(0).o: 0.5,
        an.layer(1).o: 1.0,
        an.layer(1).down: 0.25,
    }
    assert e.info["direction_index"] == 0.5 and set(e.info["scores"]) == {"refusal_log_odds", "kl"}


def test_apply_with_optuna_search_resumes_from_the_journal_and_the_card_shows_the_trials(tmp_path, tiny_dir):
    from editkit import apply_recipe

    for name, prompts in (("harmful", HARM), ("harmless", SAFE)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"instruction": p} for p in prompts]))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"""name: tiny-refusal-search
model: {tiny_dir("llama")}
method:
  name: refusal
  n_train: 8
  n_val: 4
  sra: false
  search: optuna
  trials: 5
  startup_trials: 2
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
    info = res.edit.info
    assert (tmp_path / "run" / JOURNAL).exists() and len(info["trials"]) == 5
    assert res.metrics["export"]["max_abs_logit_diff"] <= 1e-4
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "refusal_trials.png" in card and f"Picked: trial **{info['chosen_trial']}**" in card
    assert (tmp_path / "run" / "model" / "editkit" / "plots" / "refusal_trials.png").exists()
    assert "| grid optimum (the first trial) |" in card
    # the refusal report's own section, from the samples the evaluation phases kept in the run directory
    assert "## Sample generations" in card and "### Harmful prompts" in card
    assert "Then confirmed by generation" in card
    if not info["trials"][info["chosen_trial"]]["grid"]:
        assert "grid optimum" in res.metrics["comparisons"]


def test_a_stop_file_ends_the_search_with_the_trials_finished(tmp_path):
    from editkit.methods.refusal.optuna_search import STOP

    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / STOP).touch()  # before the first trial: the grid optimum is still scored, nothing else
    _, res = _search(tmp_path, trials=6)
    info = res.edit.info
    assert [t["grid"] for t in info["trials"]] == [True] and info["stopped_after"] == 1
    assert info["chosen_trial"] == 0 and res.comparisons == {}


def test_a_spent_time_budget_ends_the_search_after_the_grid_trial(tmp_path):
    _, res = _search(tmp_path, trials=6, search_minutes=1e-9)  # spent before the first trial
    info = res.edit.info
    assert [t["grid"] for t in info["trials"]] == [True] and info["stopped_after"] == 1
    assert info["chosen_trial"] == 0
    # the fit's progress ends at its total: the trials that did not run left the total (1 grid unit, the grid
    # trial, the confirmation of the grid optimum)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    prog = [e for e in events if e.get("type") == "progress" and e.get("stage") == "fit"]
    assert prog[-1]["done"] == prog[-1]["total"] == 1 + 1 + len(info["confirmed"])


def test_an_unspent_time_budget_leaves_the_search_as_it_was(tmp_path):
    _, a = _search(tmp_path / "a", trials=4)
    _, b = _search(tmp_path / "b", trials=4, search_minutes=600)
    assert _trials(a.edit) == _trials(b.edit) and b.edit.info["stopped_after"] is None


def test_generated_objective_scores_each_trial_by_the_refusals_in_its_generated_text(tmp_path):
    """search_objective: generated: a trial's refusal objective is the share of validation harmful prompts
    whose greedy text has a refusal marker (as heretic counts), and the rule and the pick read it."""
    _, res = _search(
        tmp_path, trials=4, search_objective="generated", objective_max_new_tokens=4, confirm_max_new_tokens=4
    )
    info = res.edit.info
    assert info["objective_key"] == "val_refusal_rate"
    done = {t["number"]: t for t in info["trials"] if t["state"] == "complete"}
    assert all("refusal_log_odds" not in t for t in info["trials"])
    assert all(0.0 <= t["val_refusal_rate"] <= 1.0 for t in done.values())
    # the grid optimum's generated rate is the target, and confirming with as many tokens generates the same
    # greedy texts, so every confirmed rate is the trial's objective
    assert info["refusal_target"] == done[0]["val_refusal_rate"]
    for c in info["confirmed"]:
        assert c["refusal_rate"] == pytest.approx(done[c["number"]]["val_refusal_rate"], abs=5e-5)
    assert info["chosen_trial"] == confirmed_pick(info["confirmed"], "val_refusal_rate")
    assert set(info["scores"]) == {"val_refusal_rate", "kl"}
