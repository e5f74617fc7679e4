"""The shipped heads/neurons recipes run end to end on the demo model, with cards (slow; shortened settings).

Full-length numbers are in BENCHMARKS.md; here the same recipe files run with fewer trials/items so CI stays
fast, and the test checks what a user relies on: a removal that beats its random control, an exact export, a card.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from editkit import apply_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# the removal checks cost ~3 min per demo run: tests/test_removal_checks.py runs them end to end with tiny settings
SHORT_EVAL = [
    "eval.max_items=24",
    "eval.drift_prompts=4",
    "eval.robustness_families=[stored,distractor]",
    "eval.checks=false",
    "data.general={source: builtin, limit: 8}",  # perplexity on 8 rows: the full 38 cost ~25 s a run
]


@pytest.mark.slow
def test_heads_arithmetic_recipe(demo_model_dir, tmp_path):
    res = apply_recipe(
        RECIPES / "heads_arithmetic.yaml",
        out=tmp_path / "heads",
        overrides=["method.trials=12", "method.items=8", *SHORT_EVAL],
    )
    m = res.metrics
    assert len(m["edit"]["info"]["heads"]) == 5 and m["edit"]["info"]["n_evals"] == 13
    assert m["export"]["max_abs_logit_diff"] <= 1e-4
    assert (res.run_dir / "heads_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (res.model_dir / "README.md").read_text()
    assert "capability-ablation" in card and "arithmetic" in card


@pytest.mark.slow
def test_neurons_arithmetic_recipe(demo_model_dir, tmp_path):
    res = apply_recipe(
        RECIPES / "neurons_arithmetic.yaml",
        out=tmp_path / "neurons",
        # the shipped method settings (a threshold no neuron passes fails the fit); the evaluation cut further
        overrides=[*SHORT_EVAL, "eval.robustness=false", "eval.control=false"],
    )
    m = res.metrics
    assert m["edit"]["info"]["n_common"] >= 1 and m["edit"]["modules"] >= 1
    assert m["export"]["max_abs_logit_diff"] <= 1e-4
    assert "overlap" in m["edit"]["info"]
    assert (res.model_dir / "README.md").exists()
