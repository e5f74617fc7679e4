"""The worked example of docs/adding_an_evaluation.md: an evaluation added from outside editkit by one module
(docs/example_check/answer_words.py) and one line (``register_check``). Its block validates in recipes (a bad
value exits 2 before a run directory exists), it runs on every phase with the units it announced, its result
round-trips through metrics.json, and its section renders in the card."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from editkit.data.capabilities import load_triplets
from editkit.edit.edit import Edit
from editkit.edit.ops import ScaleInputs
from editkit.errors import RecipeError
from editkit.eval.checks import CHECKS, CheckData, checks_spec, unregister_check
from editkit.eval.checks.report import checks_section
from editkit.eval.checks.run import checks_units, judge_checks, run_checks
from editkit.eval.subsets import stratified_subset
from editkit.spec.recipe import parse_recipe
from tests.launch import ROOT
from tests.tiny import save_tiny, tiny_model

EXAMPLE_DIR = ROOT / "docs" / "example_check"


@pytest.fixture
def example_check():
    sys.path.insert(0, str(EXAMPLE_DIR))
    try:
        yield importlib.import_module("answer_words")
    finally:
        unregister_check("answer_words")
        sys.modules.pop("answer_words", None)
        sys.path.remove(str(EXAMPLE_DIR))
    assert "answer_words" not in CHECKS and "answer_words" not in checks_spec().model_fields


def _recipe(checks) -> str:
    return yaml.safe_dump(
        {
            "name": "x",
            "model": "demo",
            "method": {"name": "heads"},
            "data": {"target": "moral"},
            "eval": {"checks": checks},
        }
    )


def test_its_block_validates_in_a_recipe(example_check):
    r = parse_recipe(_recipe({"answer_words": {"max_items": 5}, "probe": False}))
    spec = r.eval.checks.enabled()
    assert list(spec) == [*[n for n in CHECKS if n != "probe"]] and list(spec)[-1] == "answer_words"
    assert spec["answer_words"] == example_check.AnswerWordsSpec(max_items=5)
    assert parse_recipe(_recipe(True)).eval.checks.answer_words == example_check.AnswerWordsSpec()
    with pytest.raises(RecipeError, match=r"eval\.checks\.answer_words\.max_items"):
        parse_recipe(_recipe({"answer_words": {"max_items": 0}}))
    with pytest.raises(RecipeError, match=r"eval\.checks\.nope"):
        parse_recipe(_recipe({"nope": True}))


def test_without_the_plug_in_its_block_is_an_error():
    with pytest.raises(RecipeError, match=r"eval\.checks\.answer_words"):
        parse_recipe(_recipe({"answer_words": True}))


def test_a_bad_value_exits_2_before_a_run_directory_exists(example_check, tmp_path, monkeypatch):
    from editkit.cli.main import app

    save_tiny("llama", tmp_path / "tiny")
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "model": str(tmp_path / "tiny"),
                "method": {"name": "heads", "heads": [[0, 1]]},
                "data": {"target": "moral"},
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    bad = "eval.checks.answer_words.max_drop=2"
    result = CliRunner().invoke(app, ["apply", str(path), "--runs", str(tmp_path / "runs"), "--set", bad])
    msg = result.output.strip()
    assert result.exit_code == 2 and len(msg.splitlines()) == 1, (msg, result.exception)
    assert msg.startswith("error: ") and "eval.checks.answer_words.max_drop" in msg
    assert not (tmp_path / "runs").exists()


def test_it_runs_counts_its_units_round_trips_and_renders(example_check, tmp_path):
    torch.set_num_threads(1)
    model, tok = tiny_model("llama")
    test = stratified_subset([dict(r) for r in load_triplets("moral", split="test")], 6, 0)
    data = CheckData(tok, test, seed=0, batch_size=8)
    spec = checks_spec()(**{n: False for n in CHECKS if n != "answer_words"}).enabled()
    assert list(spec) == ["answer_words"]
    edits = {
        "base": None,
        "edited": Edit("x", [ScaleInputs("model.layers.1.mlp.down_proj", index=list(range(64)), factor=0.0)]),
    }
    done: list[int] = []
    metrics: dict = {}
    run_checks(model, edits, data, spec, metrics, on_units=done.append)
    assert sum(done) == checks_units(spec, data, edits) == 12
    stored = json.loads(json.dumps(metrics))  # what metrics.json holds
    phases = stored["checks"]["answer_words"]["phases"]
    assert {p: v["n"] for p, v in phases.items()} == {"base": 6, "edited": 6}
    again = {
        "checks": {
            "answer_words": {k: v for k, v in stored["checks"]["answer_words"].items() if k != "judge"}
        }
    }
    judge_checks(again)  # a stored run is re-judged from the file alone
    assert again["checks"]["answer_words"]["judge"] == stored["checks"]["answer_words"]["judge"]
    assert stored["checks"]["answer_words"]["judge"]["summary"].startswith("answers in the frame ")
    text = "\n".join(checks_section(stored))
    assert "### Answers in the frame: " in text and "| base | " in text and "| edited | " in text
