"""The base phase cache: a second run of the same weights reads the base model's suite, generations and
removal checks (the paraphrase families included) from the cache, number for number; a changed setting, a damaged entry or
``eval.cache: false`` measures again."""

from __future__ import annotations

import json

import pytest

from editkit import apply_recipe
from editkit.eval.phase_cache import code_digest, package_digest
from editkit.eval.store import CACHE_ENV, sha, source_digest
from editkit.run.events import read_events
from tests.test_pipeline import TRIPLETS  # the same tiny moral target

RECIPE = """\
name: tiny-cache
model: {model}
method: {{name: heads, heads: [[0, 1], [1, 2]]}}
data: {{target: {target}, heldout: [capitals]}}
eval:
  blimp: false
  max_items: 8
  batch_size: 8
  checks: {{relearn: {{steps: 2, examples: 4}}, probe: {{layer_stride: 1}}, specificity: {{per_capability: 4}},
           quantised: false}}
seed: 3
"""

KINDS = {
    "suite",
    "check:robustness",
    "check:separation",
    "check:probe",
    "check:relearn",
    "check:specificity",
}


@pytest.fixture
def recipe(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "eval-cache"))
    target = tmp_path / "moral.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in TRIPLETS))
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(model=tiny_dir("llama"), target=target))
    return path


def _statuses(res) -> dict[str, str]:
    return {k: v["status"] for k, v in res.metrics["base_phase_cache"].items()}


def test_second_run_reads_the_base_phase_from_the_cache_number_for_number(recipe, tmp_path):
    one = apply_recipe(recipe, out=tmp_path / "one")
    two = apply_recipe(recipe, out=tmp_path / "two")
    assert _statuses(one) == dict.fromkeys(KINDS, "stored")
    assert _statuses(two) == dict.fromkeys(KINDS, "hit")
    # edited/control read the cached drift baseline; the greedy generations come from the suite's entry
    assert [set(r) for r in two.metrics["generations"]] == [{"prompt", "base", "edited"}] * 3
    for section in ("base", "edited", "control", "generations"):
        assert two.metrics[section] == one.metrics[section], section
    for name in ("separation", "probe", "relearn", "specificity", "robustness"):
        assert two.metrics["checks"][name]["phases"] == one.metrics["checks"][name]["phases"], name
    assert two.metrics["checks"]["verdict"] == one.metrics["checks"]["verdict"]
    card = (tmp_path / "two" / "model" / "README.md").read_text()
    assert f"Base model: {len(KINDS)} of {len(KINDS)} measurements (" in card
    assert "Base model:" not in (tmp_path / "one" / "model" / "README.md").read_text()
    # a hit still counts every unit of progress
    for stage in ("eval_base", "checks"):
        prog = [e for e in read_events(two.run_dir) if e["type"] == "progress" and e["stage"] == stage]
        assert prog[-1]["done"] == prog[-1]["total"] > 0, stage

    off = apply_recipe(recipe, overrides=["eval.cache=false"], out=tmp_path / "off")
    assert "base_phase_cache" not in off.metrics
    assert (
        off.metrics["base"] == one.metrics["base"]
        and off.metrics["checks"]["robustness"]["phases"] == one.metrics["checks"]["robustness"]["phases"]
    )


def test_a_changed_setting_misses_and_a_damaged_entry_is_measured_again(recipe, tmp_path):
    one = apply_recipe(recipe, out=tmp_path / "one")
    other = apply_recipe(recipe, overrides=["eval.max_items=6"], out=tmp_path / "other")
    # other items: every measurement of them misses
    assert _statuses(other) == dict.fromkeys(KINDS, "stored")
    key = one.metrics["base_phase_cache"]["suite"]["key"]
    entry = tmp_path / "eval-cache" / f"phase-{key}.safetensors"
    entry.write_bytes(entry.read_bytes()[:200])  # torn
    again = apply_recipe(recipe, out=tmp_path / "again")
    assert _statuses(again)["suite"] == "stored" and _statuses(again)["check:probe"] == "hit"
    assert again.metrics["base"] == one.metrics["base"]
    warnings = [e for e in read_events(again.run_dir) if e["type"] == "log" and e.get("level") == "warning"]
    assert any(f"entry {key} (suite) is damaged" in e["message"] for e in warnings)


def test_the_key_covers_the_editkit_source():
    digest = package_digest()
    assert len(digest) == 32 and digest == package_digest()


SCORER = '''"""Markers that mean a refusal."""

MARKERS = ("I can't", "I cannot")


def refused(text: str) -> bool:
    """Whether ``text`` opens with a marker."""
    return text.startswith(MARKERS)
'''


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace(
            "Markers that mean a refusal.", "The phrases a refusal opens with (see the README)."
        ),
        lambda s: s.replace('    """Whether ``text`` opens with a marker."""\n', ""),
        lambda s: s.replace("MARKERS = (", "# two markers, checked once\nMARKERS = (  # the list\n    "),
        lambda s: s.replace("\n\n\ndef", "\n\ndef"),
    ],
    ids=["docstring", "docstring removed", "comments and layout", "blank lines"],
)
def test_a_documentation_edit_keeps_the_code_digest(edit):
    assert edit(SCORER) != SCORER
    assert source_digest(edit(SCORER)) == source_digest(SCORER)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace('"I cannot")', '"I cannot", "Sorry")'),  # a string that is data, not a docstring
        lambda s: s.replace("startswith", "endswith"),
        lambda s: s.replace("    return text", "    text = text.strip()\n    return text"),
    ],
    ids=["marker added", "call changed", "statement added"],
)
def test_a_code_edit_changes_the_code_digest(edit):
    assert source_digest(edit(SCORER)) != source_digest(SCORER)


def test_source_that_does_not_parse_is_keyed_by_its_bytes():
    assert source_digest("def broken(:\n") == sha("def broken(:\n")


def test_a_measurement_defined_outside_editkit_is_keyed_by_its_own_source(tmp_path, monkeypatch):
    mod = tmp_path / "outside_check.py"
    mod.write_text("class OutsideCheck:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import outside_check

    before = code_digest(outside_check.OutsideCheck())
    mod.write_text(
        "class OutsideCheck:\n    threshold = 0.7\n"
    )  # its code changed: its cached base phase is stale
    after = code_digest(outside_check.OutsideCheck())
    assert before != after and "unknown" not in before + after
