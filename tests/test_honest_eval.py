"""Honest numbers: stratified seeded subsets, per-answer-class metrics, eval of an export without -c."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
import torch

from editkit.data.capabilities import load_triplets
from editkit.eval.parts.target import target_metrics
from editkit.eval.subsets import answer_classes, stratified_subset


def _moral_test() -> list[dict]:
    return [dict(r) for r in load_triplets("moral", split="test")]


def test_first_items_are_one_sided_but_the_subset_is_not():
    items = _moral_test()
    assert {r["correct"] for r in items[:20]} == {" bad"}  # why "the first N" misleads
    full = Counter(r["correct"] for r in items)
    sub = stratified_subset(items, 20, seed=0)
    got = Counter(r["correct"] for r in sub)
    assert len(sub) == 20 and set(got) == {" bad", " good"}
    for c in full:  # in proportion, to within one item
        assert abs(got[c] - 20 * full[c] / len(items)) < 1
    assert [items.index(r) for r in sub] == sorted(items.index(r) for r in sub)  # original order kept
    assert stratified_subset(items, 20, seed=0) == sub  # seeded
    assert stratified_subset(items, 20, seed=1) != sub
    assert stratified_subset(items, None) == items and stratified_subset(items, 10**6) == items


def test_subset_stratifies_by_family_and_keeps_every_stratum():
    items = [
        {"prompt": f"p{i}", "correct": c, "incorrect": "x", "family": f}
        for i, (f, c) in enumerate(
            [("frame_a", " yes")] * 30 + [("frame_b", " no")] * 6 + [("frame_c", " no")] * 2
        )
    ]
    sub = stratified_subset(items, 8, seed=3)
    fams = Counter(r["family"] for r in sub)
    assert len(sub) == 8 and set(fams) == {"frame_a", "frame_b", "frame_c"}
    # many distinct answers (numbers, capitals) are not classes: the subset is simply seeded random
    arith = [dict(r) for r in load_triplets("arithmetic", split="test")]
    assert answer_classes(arith) is None and len(stratified_subset(arith, 10, seed=0)) == 10


def test_load_data_max_items_measures_both_answer_classes():
    from editkit.data.recipe_data import load_data
    from editkit.spec.recipe import parse_recipe

    r = parse_recipe(
        "name: t\nmodel: demo\nmethod: {name: heads, heads: [[0, 0]]}\ndata: {target: moral}\n"
        "eval: {max_items: 20, blimp: false}\n"
    )
    data = load_data(r, ())
    assert {t["correct"] for t in data.eval.target_test} == {" bad", " good"}
    assert {t["correct"] for t in data.eval.heldout["sentiment"]} == {" negative", " positive"}
    assert all(len(v) == 20 for v in data.eval.heldout.values())
    prompts = data.eval.parts["generations"]["prompts"]  # three of the target test prompts
    assert len(prompts) == 3 and set(prompts) <= {t["prompt"] for t in data.eval.target_test}


def test_target_metrics_per_answer_class():
    items = [{"prompt": "p", "correct": c, "incorrect": "x"} for c in [" bad"] * 4 + [" good"] * 2]
    margins = torch.tensor([-1.0, -1.0, -1.0, 0.5, 2.0, 1.0])  # a tilt towards " good"
    m = target_metrics(items, margins)
    assert m["target_accuracy"] == pytest.approx(3 / 6)
    assert m["target_accuracy/bad"] == 0.25 and m["target_accuracy/good"] == 1.0
    assert m["target_balanced_accuracy"] == 0.625
    assert m["target_mean_margin"] == pytest.approx(0.5 / 6)


def test_eval_of_an_export_without_c_excludes_the_removed_capability(tiny_dir, tmp_path):
    from editkit.eval.any_model import evaluate_target, removed_capability

    model = tiny_dir("llama")
    (model / "editkit").mkdir()
    (model / "editkit" / "run.json").write_text(json.dumps({"capability": "moral", "run_id": "r"}))
    said = []
    m = evaluate_target(str(model), max_items=2, skip=("blimp",), say=said.append)
    assert "heldout/moral" not in m and "target_accuracy" in m and "heldout/arithmetic" in m
    heldout = [v for k, v in m.items() if k.startswith("heldout/")]
    assert m["general_capability_score"] == pytest.approx(sum(heldout) / len(heldout))
    assert any("'moral' as the target" in s for s in said)
    # an older export without "capability" in run.json: the embedded recipe says what was removed
    older = tmp_path / "older"
    shutil.copytree(model, older)
    (older / "editkit" / "run.json").write_text(json.dumps({"run_id": "r"}))
    (older / "editkit" / "recipe.yaml").write_text("name: x\ndata:\n  target:\n    source: sentiment\n")
    assert removed_capability(older)[0] == "sentiment"
    assert removed_capability(tiny_dir("llama", seed=1)) is None  # not an editkit export
