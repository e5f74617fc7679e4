"""`editkit eval --refusal`: any model's refusal numbers against its base, scored as a run scores its edit."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from editkit.cli.main import app
from tests.tiny import save_tiny


def _eval(*args) -> dict:
    res = CliRunner().invoke(app, ["eval", *map(str, args)], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res


def test_eval_refusal_scores_a_model_against_its_base_and_reuses_the_base_measurement(tmp_path):
    base = save_tiny("llama", tmp_path / "base", seed=0)
    other = save_tiny("llama", tmp_path / "other", seed=1)
    common = ["--refusal", "--base", base, "--judge", "markers", "--max-items", 3, "--skip", "blimp"]
    _eval(other, *common, "--json", tmp_path / "other.json")
    m = json.loads((tmp_path / "other.json").read_text())
    assert m["settings"] == {"prompts": 3, "max_new_tokens": 64, "judge": "markers", "split": "test"}
    assert [len(m["responses"][r]["responses"]) for r in ("harmful", "harmless")] == [3, 3]
    assert m["model"]["harmless_kl"] > 0 and m["base_eval_cache"] == "stored"
    refusal = {"refusal_rate", "over_refusal_rate", "harmless_kl", "harmless_kl_answered"}
    assert refusal <= set(m["base"]) and set(m["base"]) == set(m["model"])
    assert {"perplexity", "heldout/sentiment"} <= set(m["base"]) and "blimp_accuracy" not in m["base"]
    assert m["base"]["harmless_kl"] == 0.0
    # the base against itself: the same responses and first tokens, so KL exactly 0; its side from the cache
    res = _eval(base, *common, "--json", tmp_path / "self.json")
    s = json.loads((tmp_path / "self.json").read_text())
    assert s["base_eval_cache"] == "hit" and s["model"]["harmless_kl"] == 0.0
    assert s["model"]["refusal_rate"] == s["base"]["refusal_rate"] == m["base"]["refusal_rate"]
    assert s["model"] == s["base"]  # every number, the suite's too
    assert "harmless_kl" in res.output and "base" in res.output
    # --skip heldout leaves the held-out capabilities' items out, not only a part's own data
    _eval(other, *common, "--skip", "heldout", "--json", tmp_path / "no-heldout.json")
    assert not any(
        k.startswith("heldout/") for k in json.loads((tmp_path / "no-heldout.json").read_text())["model"]
    )


def test_eval_refusal_without_a_base_says_how_to_name_one(tmp_path):
    model = save_tiny("llama", tmp_path / "m")
    res = CliRunner().invoke(app, ["eval", str(model), "--refusal"])
    assert res.exit_code == 2
    assert "--refusal:" in res.output and "give it with --base MODEL" in res.output


def test_eval_refusal_and_checks_together_is_an_error(tmp_path):
    res = CliRunner().invoke(app, ["eval", "demo", "--refusal", "--checks"])
    assert res.exit_code == 2 and "give one" in res.output
