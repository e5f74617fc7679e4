"""Built-in refusal prompt sets: shipped in the package, offline, disjoint splits; recipes use them."""

from __future__ import annotations

from pathlib import Path

import pytest

from editkit.data.prompt_sets import BUILTIN_PROMPT_SETS, PROMPT_SET_DIR, SPLITS
from editkit.data.recipe_data import _load_set
from editkit.errors import DataError
from editkit.eval.refusal.chat import prompt_texts
from editkit.spec.inputs import DataSource
from editkit.spec.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SIZES = {
    "harmful": {"train": 256, "val": 64, "test": 200},
    "harmless": {"train": 266, "val": 64, "test": 200},
}


@pytest.mark.parametrize("name", list(BUILTIN_PROMPT_SETS))
def test_builtin_sets_load_offline_with_disjoint_splits(name):
    seen: dict[str, set[str]] = {}
    for split in SPLITS:
        rows = _load_set(DataSource(source=name, split=split), f"data.sets.{name}")
        prompts = prompt_texts(rows, name)
        assert len(prompts) == len(set(prompts)) == SIZES[name][split]
        assert all(r["split"] == split for r in rows) and all(p.strip() == p and p for p in prompts)
        seen[split] = {" ".join(p.lower().split()) for p in prompts}
    assert (
        not seen["train"] & seen["val"]
        and not seen["train"] & seen["test"]
        and not seen["val"] & seen["test"]
    )


def test_harmful_and_harmless_sets_do_not_overlap():
    rows = {n: _load_set(DataSource(source=n, split="test"), n) for n in BUILTIN_PROMPT_SETS}
    assert not {r["prompt"] for r in rows["harmful"]} & {r["prompt"] for r in rows["harmless"]}


def test_limit_and_default_split_and_bad_split():
    rows = _load_set(DataSource(source="harmful", limit=5), "data.sets.harmful")
    assert len(rows) == 5 and {r["split"] for r in rows} == {"train"}
    with pytest.raises(DataError, match=r"data.sets.x.split: .*train, val, test, not 'dev'"):
        _load_set(DataSource(source="harmless", split="dev"), "data.sets.x")


def test_sources_and_licences_are_documented():
    notice = (PROMPT_SET_DIR / "NOTICE.md").read_text()
    assert "AdvBench" in notice and "MIT" in notice and "Copyright (c) 2023 Andy Zou" in notice
    assert "Apache-2.0" in notice


def test_hub_dataset_id_goes_to_datasets_and_fails_in_one_line_offline():
    # heretic's default, as one writes it; the tests run with the Hub offline
    with pytest.raises(DataError) as e:
        _load_set(DataSource(source="mlabonne/harmful_behaviors", split="train"), "data.sets.harmful")
    assert str(e.value).startswith(
        "data.sets.harmful: could not load mlabonne/harmful_behaviors"
    ) and "\n" not in str(e.value)


def test_no_recipe_reads_files_outside_the_project():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        assert "../shared" not in path.read_text(), path.name
        load_recipe(path)  # validates


@pytest.mark.parametrize(
    "recipe",
    ["remove_refusal.yaml", "remove_refusal_plain.yaml", "plant_refusal.yaml", "remove_refusal_qwen.yaml"],
)
def test_refusal_recipes_load_their_data_without_a_model(recipe):
    from editkit.run.pipeline import prepare

    r = load_recipe(ROOT / "recipes" / recipe)
    _, data = prepare(r)
    for name, src in r.data.sets.items():
        assert src.source in BUILTIN_PROMPT_SETS
        assert len(data.roles[name]) == min(src.limit or 10**9, SIZES[src.source][src.split or "train"])
