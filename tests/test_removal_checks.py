"""Removal checks (issue 26): each rule at its boundaries on hand-made numbers, the measures on planted data,
the quantisation round trip against the gguf library, the runner on a tiny random model, the recipe block
and the card. The end-to-end run on the demo model is marked slow."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch

from editkit.data.capabilities import load_triplets
from editkit.edit.edit import Edit
from editkit.edit.ops import ScaleInputs
from editkit.errors import RecipeError
from editkit.eval.checks import CHECKS, CheckData, ChecksSpec
from editkit.eval.checks.probe import judge_probe, probe_auc
from editkit.eval.checks.quantised import fake_quantise, max_rise, quantise_model
from editkit.eval.checks.relearn import recovered_share
from editkit.eval.checks.report import checks_section, headline_lines
from editkit.eval.checks.run import run_checks
from editkit.eval.checks.separation import can_do, frame_removed, judge_separation, separation_auc
from editkit.eval.checks.verdict import headline_verdict
from editkit.eval.subsets import stratified_subset
from editkit.spec.recipe import parse_recipe
from tests.tiny import tiny_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine lose 50× to it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------ the rules


def test_frame_rule_at_its_boundaries():
    assert frame_removed(0.90, 0.60) is True  # at the absolute bound
    assert frame_removed(0.90, 0.40) is True  # |0.40 − 0.5| = 0.10: the same distance from chance
    assert frame_removed(0.90, 0.6001) is False  # above it, and only 74.98 % of 0.40 closed
    assert frame_removed(1.00, 0.625) is True  # 75 % of the base excess 0.5 closed exactly
    assert frame_removed(1.00, 0.6251) is False
    assert frame_removed(0.90, 0.35) is False  # inverted separation still separates (0.15 left of 0.40)
    assert frame_removed(None, 0.5) is None
    assert can_do(0.70) and not can_do(0.6999)


def _frames(**aucs):
    return {f: {"auc": a} for f, a in aucs.items()}


def test_separation_judge_counts_only_unseen_frames_the_base_can_do():
    base = _frames(original=0.95, answer_words=0.90, answer_yes_no=0.65)
    j = judge_separation(base, _frames(original=0.50, answer_words=0.55, answer_yes_no=0.65))
    assert j["pass"] is True and j["counted"] == ["answer_words"]
    j = judge_separation(base, _frames(original=0.50, answer_words=0.80, answer_yes_no=0.50))
    assert j["pass"] is False and "answer_words" in j["summary"]
    assert j["mean_closed_unseen"] == pytest.approx(0.25)
    j = judge_separation(_frames(original=0.9, answer_words=0.69), _frames(original=0.5, answer_words=0.5))
    assert j["pass"] is None  # no unseen frame the base can do: undecided, never "removed"


def test_probe_rule_at_its_boundaries():
    assert judge_probe(0.90, 0.60)["pass"] is True
    assert judge_probe(0.90, 0.61)["pass"] is False  # 0.11 / 0.40 = 27.5 % of the excess left
    assert judge_probe(1.00, 0.625)["pass"] is True  # exactly 25 % of the base excess left
    assert judge_probe(1.00, 0.626)["pass"] is False
    assert judge_probe(0.59, 0.50)["pass"] is None  # nothing linear to remove in the base model


def test_recovered_share_formula():
    assert recovered_share(0.80, 0.50, 0.65) == pytest.approx(0.5)
    assert recovered_share(0.80, 0.50, 0.80) == pytest.approx(1.0)
    assert recovered_share(0.80, 0.50, 0.40) == pytest.approx(-1 / 3)
    assert recovered_share(0.80, 0.751, 0.80) is None  # drop below 0.05: nothing to recover
    judge = CHECKS["relearn"].judge
    base, edited = {"accuracy": 0.8}, {"accuracy": 0.5, "attacked_accuracy": 0.65}
    assert judge({"base": base, "edited": edited}, {})["hidden"] is False  # R = 0.5 is not > 0.5
    edited["attacked_accuracy"] = 0.66
    assert judge({"base": base, "edited": edited}, {})["hidden"] is True


def _metrics(sep_edited, probe=(0.9, 0.55), R=0.1, rise=0.0, acc=(0.8, 0.5)):
    base = _frames(original=0.9, answer_words=0.9, answer_yes_no=0.9)
    checks = {
        "separation": {"judge": judge_separation(base, sep_edited)},
        "probe": {"judge": judge_probe(*probe)},
        "relearn": {"judge": {"pass": R <= 0.5, "hidden": R > 0.5, "R": R, "summary": f"R = {R}"}},
        "quantised": {"judge": {"pass": rise <= 0.05, "max_rise": {"q8_0": rise}, "summary": ""}},
    }
    return {"base": {"target_accuracy": acc[0]}, "edited": {"target_accuracy": acc[1]}, "checks": checks}


def test_headline_verdict_statuses():
    gone = _frames(original=0.5, answer_words=0.55, answer_yes_no=0.52)
    assert headline_verdict(_metrics(gone))["status"] == "removed"
    assert headline_verdict(_metrics(gone, probe=(0.9, 0.8)))["status"] == "hidden"
    assert headline_verdict(_metrics(gone, R=0.51))["status"] == "hidden"
    assert headline_verdict(_metrics(gone, rise=0.06))["status"] == "weakened"  # quantising brings it back
    tokens = _frames(original=0.88, answer_words=0.9, answer_yes_no=0.85)  # a tilt: AUC kept everywhere
    v = headline_verdict(_metrics(tokens, probe=(0.9, 0.9), R=0.9))
    assert v["status"] == "answer_tokens_only" and "0.800 → 0.500" in v["sentence"]
    half = _frames(original=0.5, answer_words=0.6, answer_yes_no=0.75)  # one frame gone, one kept
    assert headline_verdict(_metrics(half))["status"] == "weakened"
    assert headline_verdict(_metrics(tokens, acc=(0.8, 0.78)))["status"] == "not_removed"
    m = _metrics(gone)
    del m["checks"]["probe"]  # switched off: "removed" needs all four
    assert headline_verdict(m)["status"] == "weakened"
    assert headline_verdict({"base": {}, "edited": {}}) is None


# ------------------------------------------------------------------------------------- the measures


def _moral_items(n=40, seed=0):
    return stratified_subset([dict(r) for r in load_triplets("moral", split="test")], n, seed)


def test_constant_tilt_leaves_the_separation_auc_where_it_was():
    items = _moral_items()
    rng = random.Random(0)
    margins = [rng.gauss(0.6 if rng.random() < 0.8 else -0.6, 0.7) for _ in items]
    auc, tilt = separation_auc(items, margins)
    assert 0.5 < auc < 1.0
    for c in (0.3, 2.0, -5.0):  # ℓ(" bad") raised by c on every item
        tilted = [m + c if it["correct"] == " bad" else m - c for m, it in zip(margins, items, strict=True)]
        auc2, tilt2 = separation_auc(items, tilted)
        assert auc2 == auc
        assert tilt2 == pytest.approx(tilt + c)
    flipped = [-m for m in margins]  # every answer reversed: still separated, the other way round
    assert separation_auc(items, flipped)[0] == pytest.approx(1 - auc)


def test_separation_auc_without_shared_answer_pairs():
    items = [{"correct": f" c{i}", "incorrect": f" w{i}"} for i in range(20)]
    assert separation_auc(items, [1.0 + i for i in range(20)])[0] == 1.0
    assert separation_auc(items, [0.0] * 20)[0] == 0.5


def _planted(n_items=40, frames=("a", "b", "c"), layers=3, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    labels_item = np.array([i % 2 for i in range(n_items)])
    rows, ys, fs, its = [], [], [], []
    w = rng.normal(size=dim)
    for f in frames:
        for i in range(n_items):
            x = rng.normal(size=(layers, dim))
            x[1] += (2 * labels_item[i] - 1) * 3.0 * w / np.linalg.norm(w)  # layer 1 holds the class
            rows.append(x)
            ys.append(labels_item[i])
            fs.append(f)
            its.append(i)
    return np.stack(rows), np.array(ys), fs, its


def test_probe_reads_planted_separable_states_and_not_shuffled_labels():
    states, ys, fs, its = _planted()
    aucs, splits = probe_auc(states, ys, fs, its, seed=0)
    assert splits == 6 and aucs[1] == 1.0
    assert max(abs(a - 0.5) for a in (aucs[0], aucs[2])) < 0.2
    shuffled = ys.copy()
    np.random.default_rng(1).shuffle(shuffled)
    aucs, _ = probe_auc(states, shuffled, fs, its, seed=0)
    assert all(abs(a - 0.5) < 0.2 for a in aucs)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_probe_states_are_the_residual_stream_and_the_head_runs_on_one_position(family):
    """last_token_states gives every layer's output at the last token, exactly as a plain forward does,
    while the output head (whose logits the probe never reads) runs on one position per row."""
    from editkit.eval.checks.probe import last_token_states
    from editkit.eval.forward import output_head

    model, tok = tiny_model(family)
    if family == "gpt2":  # GPT-2 ships without a pad token: the probe borrows EOS and must give it back
        tok = copy.deepcopy(tok)
        tok.pad_token = None
    pad, side = tok.pad_token, tok.padding_side
    texts = ["Paris is the capital of", "Hot is", "The opposite of up is the word"]
    rows: list[int] = []
    hook = output_head(model).register_forward_pre_hook(lambda _m, a: rows.append(a[0].shape[1]))
    try:
        got = last_token_states(model, tok, texts, batch_size=3)
    finally:
        hook.remove()
    assert rows == [1] and got.shape == (3, model.config.num_hidden_layers, model.config.hidden_size)
    assert (tok.pad_token, tok.padding_side) == (pad, side)  # the caller's tokenizer is left as it was
    for i, t in enumerate(texts):
        with torch.no_grad():
            hs = model(**tok(t, return_tensors="pt"), output_hidden_states=True).hidden_states[1:]
        want = torch.stack([h[0, -1].float() for h in hs])
        assert torch.allclose(got[i], want, atol=1e-5, rtol=1e-4)


def test_quantised_round_trip_matches_gguf_numerics():
    gq = pytest.importorskip("gguf.quants")
    torch.manual_seed(0)
    w = torch.randn(6, 96) * 0.05
    w[0, :32] = 0.0  # an all-zero block
    for kind, t in (("q8_0", gq.GGMLQuantizationType.Q8_0), ("q4_0", gq.GGMLQuantizationType.Q4_0)):
        ref = gq.dequantize(gq.quantize(w.numpy(), t), t)
        assert np.array_equal(fake_quantise(w, kind).numpy(), ref)
    assert torch.equal(fake_quantise(fake_quantise(w, "q8_0"), "q8_0")[0], fake_quantise(w, "q8_0")[0])
    model, _ = tiny_model("qwen2")  # tied embeddings: rounded once
    before = model.get_input_embeddings().weight.detach().clone()
    n = quantise_model(model, "q8_0")
    after = model.get_input_embeddings().weight.detach()
    assert n == 1 + 2 * 7  # embeddings + 7 linear layers per decoder layer; the tied head is the same matrix
    assert torch.equal(after, fake_quantise(before, "q8_0"))
    assert max_rise({"a": 0.6, "b": 0.5}, {"a": 0.62, "b": 0.44}) == pytest.approx(0.06)


# ------------------------------------------------------------------------------------ runner and card


def _tiny_data(tok, n=12):
    test = _moral_items(n)
    train = [dict(r) for r in load_triplets("moral", split="train")]
    held = {
        c: stratified_subset([dict(r) for r in load_triplets(c, split="test")], 4, 0) for c in ("capitals",)
    }
    return CheckData(tok, test, train, held, seed=0, batch_size=8)


def test_runner_on_a_tiny_model_stores_every_phase_judge_and_verdict(tmp_path):
    model, tok = tiny_model("llama")
    data = _tiny_data(tok)
    spec = parse_recipe(
        "name: x\nmodel: demo\nmethod: scalpel\ndata: {target: moral}\n"
        "eval: {checks: {relearn: {steps: 2, examples: 4}, probe: {layer_stride: 1}, specificity: {per_capability: 4}}}"
    ).eval.checks
    edit = Edit("neurons", [ScaleInputs(module="model.layers.0.mlp.down_proj", index=list(range(64)))])
    control = Edit("neurons", [ScaleInputs(module="model.layers.1.mlp.down_proj", index=list(range(64)))])
    metrics = {"base": {"target_accuracy": 0.8}, "edited": {"target_accuracy": 0.5}}
    done = []
    w0 = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    store = run_checks(
        model,
        {"base": None, "edited": edit, "control": control},
        data,
        spec.enabled(),
        metrics,
        on_units=done.append,
    )
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, w0)  # copies were edited, not the model
    assert not model.model.layers[0].mlp.down_proj._forward_pre_hooks
    for name in CHECKS:
        assert "judge" in store[name] and "pass" in store[name]["judge"]
    assert set(store["separation"]["phases"]) == {"base", "edited", "control"}
    assert set(store["quantised"]["phases"]) == {"edited"}
    assert store["verdict"]["status"] in (
        "removed",
        "weakened",
        "hidden",
        "answer_tokens_only",
        "not_removed",
    )
    units = sum(
        CHECKS[n].units(data, s)
        for n, s in spec.enabled().items()
        for p in ("base", "edited", "control")
        if p in CHECKS[n].phases
    )
    assert sum(done) == units
    json.dumps(store)  # metrics.json-able
    # relearning is deterministic
    again = run_checks(model, {"base": None, "edited": edit}, data, {"relearn": spec.relearn}, {})
    assert again["relearn"]["phases"]["edited"] == store["relearn"]["phases"]["edited"]
    # the card: the headline on top, a section per check
    text = "\n".join(headline_lines(metrics) + checks_section(metrics))
    assert text.startswith("**Removal checks verdict:**")
    for name in CHECKS:
        assert CHECKS[name].title in text


def test_recipe_block_switches_and_one_line_errors():
    base = "name: x\nmodel: demo\nmethod: scalpel\ndata: {target: moral}\n"
    spec = parse_recipe(base).eval.checks
    assert list(spec.enabled()) == list(CHECKS)
    assert spec.relearn.examples == 16 and spec.relearn.steps == 20 and spec.relearn.lr == 2e-4
    assert spec.relearn.rank == 8
    assert parse_recipe(base + "eval: {checks: false}").eval.checks is False
    off = parse_recipe(base, overrides=["eval.checks.relearn=false", "eval.checks.probe=false"]).eval.checks
    assert list(off.enabled()) == ["separation", "quantised", "specificity", "robustness"]
    # recipes from before the paraphrase families were a check keep their meaning
    legacy = parse_recipe(base + "eval: {robustness: false}").eval.checks
    assert list(legacy.enabled()) == ["separation", "probe", "relearn", "quantised", "specificity"]
    legacy = parse_recipe(
        base + "eval: {checks: false, robustness_families: [stored], robustness_min_headroom: 0.1}"
    ).eval.checks
    assert list(legacy.enabled()) == ["robustness"]
    assert legacy.robustness.families == ["stored"] and legacy.robustness.min_headroom == 0.1
    assert isinstance(ChecksSpec(relearn=True).relearn, CHECKS["relearn"].spec_cls)
    for bad, where in (
        (
            "eval: {checks: {relearn: {stpes: 5}}}",
            "eval.checks.relearn.stpes: unknown field (did you mean 'steps'?)",
        ),
        ("eval: {checks: {relearn: {lr: 0}}}", "eval.checks.relearn.lr"),
        ("eval: {checks: {quantised: {types: [q3_k]}}}", "eval.checks.quantised.types.0"),
        ("eval: {checks: {probez: true}}", "eval.checks.probez: unknown field (did you mean 'probe'?)"),
        (
            "eval: {checks: {robustness: {families: [stord]}}}",
            "eval.checks.robustness.families: unknown families stord (known: stored,",
        ),
        (
            "eval: {robustness: false, checks: {robustness: true}}",
            "give eval.robustness or eval.checks.robustness, not both",
        ),
    ):
        with pytest.raises(RecipeError) as e:
            parse_recipe(base + bad)
        assert where in str(e.value) and "\n" not in str(e.value)


def test_cli_validate_bad_check_value_exits_2_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from editkit.cli.main import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: x\nmodel: demo\nmethod: scalpel\ndata: {target: moral}\neval: {checks: {relearn: {rank: 0}}}\n"
    )
    res = CliRunner().invoke(app, ["apply", str(recipe), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "eval.checks.relearn.rank" in res.output
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_demo_apply_with_checks_writes_verdict_and_sections(demo_model_dir, tmp_path):
    from editkit import apply_recipe

    res = apply_recipe(
        "recipes/heads_arithmetic.yaml",
        out=tmp_path / "run",
        overrides=[
            "method.trials=4",
            "method.items=8",
            "eval.max_items=8",
            "eval.drift_prompts=2",
            "eval.checks.robustness.families=[distractor, answer_words]",
            "eval.blimp=false",
            "eval.perplexity=false",
            "eval.generations=0",
            "data.heldout=[capitals]",
            "eval.checks.relearn.steps=2",
            "eval.checks.relearn.examples=4",
            "eval.checks.probe.layer_stride=10",
            "eval.checks.specificity.per_capability=4",
        ],
    )
    m = json.loads((res.run_dir / "metrics.json").read_text())
    for name in CHECKS:
        assert "judge" in m["checks"][name], name
    assert m["checks"]["verdict"]["status"] in (
        "removed",
        "weakened",
        "hidden",
        "answer_tokens_only",
        "not_removed",
    )
    card = (res.model_dir / "README.md").read_text()
    assert "**Removal checks verdict:**" in card and "## Removal checks" in card


def test_eval_checks_on_an_export_against_its_base(tmp_path):
    from editkit.eval.any_model import check_target
    from tests.tiny import save_tiny

    base = save_tiny("llama", tmp_path / "base", seed=0)
    other = save_tiny("llama", tmp_path / "other", seed=1)
    spec = ChecksSpec(relearn={"steps": 1, "examples": 4}, specificity={"per_capability": 2}, probe=False)
    store = check_target(str(other), base=str(base), capability="moral", max_items=6, checks=spec)
    assert set(store["separation"]["phases"]) == {"base", "edited"}
    assert "probe" not in store and store["verdict"]["status"] in (
        "weakened",
        "not_removed",
        "answer_tokens_only",
    )
    with pytest.raises(Exception, match="--base"):
        check_target(str(other), capability="moral", checks=spec)


def test_probe_judge_says_where_the_edit_starts_to_change_the_probe():
    from editkit.eval.checks.probe import reach

    r = reach([0, 2, 4], [0.9, 0.8, 0.7], [0.9, 0.6, 0.55])
    assert r == {"base_best_layer": 0, "first_changed_layer": 2, "edited_auc_from_changed": 0.6}
    j = CHECKS["probe"].judge(
        {
            "base": {"best_auc": 0.9, "layers": [0, 2, 4], "auc_per_layer": [0.9, 0.8, 0.7]},
            "edited": {"best_auc": 0.9, "layers": [0, 2, 4], "auc_per_layer": [0.9, 0.6, 0.55]},
        },
        {},
    )
    assert j["pass"] is False and "before the first layer the edit changes (2" in j["summary"]


def test_separation_judge_also_needs_the_trained_frame_gone():
    base = _frames(original=0.95, answer_words=0.90)
    j = judge_separation(base, _frames(original=0.80, answer_words=0.55))
    assert j["pass"] is False and "original" in j["summary"]
    j = judge_separation(_frames(original=0.65, answer_words=0.90), _frames(original=0.65, answer_words=0.55))
    assert j["pass"] is True  # the base cannot do the trained frame: it does not count


def test_relearn_without_disjoint_training_triplets_is_undecided():
    model, tok = tiny_model("llama")
    test = _moral_items(6)
    data = CheckData(tok, test, target_train=[dict(t) for t in test], seed=0, batch_size=8)
    spec = CHECKS["relearn"].spec_cls(steps=1)
    done = []
    res = CHECKS["relearn"].run("edited", model, data, spec, on_units=done.append).to_dict()
    assert res["attacked_accuracy"] is None and sum(done) == CHECKS["relearn"].units(data, spec)
    judged = CHECKS["relearn"].judge({"base": res, "edited": res}, {})
    assert judged["pass"] is None and "disjoint" in judged["summary"]
