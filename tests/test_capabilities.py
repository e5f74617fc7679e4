"""Built-in capability files and the triplet loader (built-in names, local files, errors)."""

from __future__ import annotations

import json

import pytest

from editkit.data.capabilities import BUILTIN_CAPABILITIES, builtin_path, load_triplets
from editkit.errors import DataError


@pytest.fixture(autouse=True)
def _offline_datasets(tmp_path, monkeypatch):
    """Keep the datasets cache inside the test's tmp dir and never touch the network."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "ds_cache"))


def _rows(name):
    with open(builtin_path(name), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_required_capabilities_are_built_in():
    assert {"moral", "arithmetic"} <= set(BUILTIN_CAPABILITIES)
    assert len(BUILTIN_CAPABILITIES) >= 6
    assert all(desc and "\n" not in desc for desc in BUILTIN_CAPABILITIES.values())


@pytest.mark.parametrize("name", sorted(BUILTIN_CAPABILITIES))
def test_builtin_file_is_well_formed(name):
    rows = _rows(name)
    main = [r for r in rows if r["frame"] == "main"]
    assert len(main) >= 200
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith(f"{name}-") for i in ids)
    splits = [r["split"] for r in main]
    assert set(splits) == {"train", "test"}
    assert splits.count("test") >= 80
    prompts = [r["prompt"] for r in rows]
    assert len(set(prompts)) == len(prompts), "duplicate prompts would leak between splits"
    for r in rows:
        assert set(r) == {
            "id",
            "split",
            "frame",
            "prompt",
            "correct",
            "incorrect",
            "paraphrases",
            "answer_frames",
        }
        assert r["correct"].startswith(" ") and r["incorrect"].startswith(" ")
        assert r["correct"] != r["incorrect"]
        assert r["prompt"] and not r["prompt"].endswith(" ")
        if r["split"] == "test":
            assert len(r["paraphrases"]) >= 2 and r["frame"] == "main"
        assert len(set(r["paraphrases"])) == len(r["paraphrases"])
        assert r["prompt"] not in r["paraphrases"]
        assert all(p and not p.endswith(" ") for p in r["paraphrases"])
        for f in r["answer_frames"]:
            assert f["correct"] != f["incorrect"] and f["prompt"] and not f["prompt"].endswith(" ")
            assert f["chat"] == (f["frame"] == "chat")
            assert f["correct"].startswith(" ") != f["chat"]  # a chat answer starts the assistant turn


@pytest.mark.parametrize("name", sorted(BUILTIN_CAPABILITIES))
def test_answer_frames_train_in_several_and_test_in_others(name):
    """Train items come in several answer frames; test items carry the other (held-out) frames only."""
    from editkit.eval.robustness.families import FAMILIES, build_families

    rows = _rows(name)
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    train_frames = {r["frame"] for r in train}
    assert len(train_frames) >= 3 and "main" in train_frames
    test_frames = {f["frame"] for r in test for f in r["answer_frames"]}
    assert test_frames == {"words", "yes_no", "explain", "chat"}
    assert not train_frames & test_frames
    assert all(r["answer_frames"] == [] for r in train)
    assert all({f["frame"] for f in r["answer_frames"]} == test_frames for r in test)
    # every train item appears in every train frame; test items never appear in train rows
    item = {r["id"]: r["id"].split("-")[1] for r in rows}
    train_items = {item[r["id"]] for r in train}
    assert not train_items & {item[r["id"]] for r in test}
    assert len(train) == len(train_items) * len(train_frames)
    # nothing a test family asks was fitted on: no held-out frame prompt is a train prompt
    train_prompts = {r["prompt"] for r in train} | {p for r in train for p in r["paraphrases"]}
    held_out = {f["prompt"] for r in test for f in r["answer_frames"]}
    assert not held_out & train_prompts
    # the answers of the held-out frames are not (all) the training answers: a token preference cannot pass
    train_answers = {(r["correct"], r["incorrect"]) for r in train}
    assert any((f["correct"], f["incorrect"]) not in train_answers for r in test for f in r["answer_frames"])
    # the robustness families that read them exist for this capability
    fams = build_families(
        test, families=[f for f in FAMILIES if f.startswith("answer_") and f != "answer_format"]
    )
    assert {"answer_words", "answer_yes_no", "answer_explain"} <= set(fams)
    assert all(len(fams[f]) == len(test) for f in ("answer_words", "answer_yes_no", "answer_explain"))


def test_builtin_answer_frames_load_through_datasets():
    test = load_triplets("moral", split="test")
    assert {"frame", "answer_frames"} <= set(test.column_names)
    frames = test[0]["answer_frames"]
    assert {f["frame"] for f in frames} == {"words", "yes_no", "explain", "chat"}
    assert all(set(f) == {"frame", "prompt", "correct", "incorrect", "chat"} for f in frames)
    train = load_triplets("moral", split="train")
    assert set(train["frame"]) == {"main", "morally", "being"} and train[0]["answer_frames"] == []


def test_builtin_files_are_reproducible(tmp_path):
    """The shipped files are exactly what scripts/make_builtin_data.py writes (deterministic generator)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "make_builtin_data.py"
    if not script.is_file():
        pytest.skip("generator script not in this checkout")
    spec = importlib.util.spec_from_file_location("make_builtin_data", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.write_all(mod.build_all(), tmp_path)
    for name in BUILTIN_CAPABILITIES:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == builtin_path(name).read_bytes(), name


def test_load_builtin_by_name_and_split():
    full = load_triplets("moral")
    train = load_triplets("moral", split="train")
    test = load_triplets("moral", split="test")
    assert len(full) == len(train) + len(test) == len(_rows("moral"))
    assert set(test["split"]) == {"test"}
    assert {"prompt", "correct", "incorrect", "paraphrases", "answer_frames", "frame", "id", "split"} == set(
        full.column_names
    )
    first = _rows("moral")[0]
    assert full[0]["prompt"] == first["prompt"]
    assert full[0]["paraphrases"] == first["paraphrases"]
    assert len(load_triplets("arithmetic", split="test", limit=5)) == 5


def test_unknown_builtin_suggests_the_closest_name():
    with pytest.raises(DataError, match=r"unknown built-in capability 'morl'.*did you mean 'moral'\?"):
        load_triplets("morl")
    with pytest.raises(DataError, match="did you mean 'arithmetic'"):
        builtin_path("arithmetc")


def test_local_jsonl_csv_parquet_with_column_mapping(tmp_path):
    import datasets

    rows = [
        {"q": "2 + 2 =", "good": " 4", "bad": " 5", "extra": 1},
        {"q": "3 + 3 =", "good": " 6", "bad": " 7", "extra": 2},
    ]
    mapping = {"q": "prompt", "good": "correct", "bad": "incorrect"}
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    csv = tmp_path / "t.csv"
    datasets.Dataset.from_list(rows).to_csv(str(csv), index=False)
    parquet = tmp_path / "t.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    js = tmp_path / "t.json"
    js.write_text(json.dumps(rows))
    for path in (jsonl, csv, parquet, js):
        ds = load_triplets(str(path), columns=mapping)
        assert ds.column_names == ["prompt", "correct", "incorrect"], path
        assert ds["prompt"] == ["2 + 2 =", "3 + 3 ="]
        assert ds["correct"] == [" 4", " 6"]
        assert ds["incorrect"] == [" 5", " 7"]
    assert len(load_triplets(str(jsonl), columns=mapping, limit=1)) == 1


def test_missing_file_unsupported_extension_missing_column_empty(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_triplets(str(tmp_path / "nope.jsonl"))
    txt = tmp_path / "data.txt"
    txt.write_text("hello\n")
    with pytest.raises(DataError, match=r"unsupported extension '\.txt'"):
        load_triplets(str(txt))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "correct": " b"}) + "\n")
    with pytest.raises(DataError, match="missing required column 'incorrect'"):
        load_triplets(str(bad))
    with pytest.raises(DataError, match="column mapping names 'answer'"):
        load_triplets(str(bad), columns={"answer": "incorrect"})
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt,correct,incorrect\n")
    with pytest.raises(DataError, match="has no rows"):
        load_triplets(str(empty))
    with pytest.raises(DataError, match="split 'test'.*has no rows"):
        load_triplets(_only_train(tmp_path), split="test")
    with pytest.raises(DataError, match="has no 'split' column"):
        load_triplets(_no_split(tmp_path), split="train")


def _only_train(tmp_path):
    p = tmp_path / "onlytrain.jsonl"
    p.write_text(json.dumps({"prompt": "a", "correct": " b", "incorrect": " c", "split": "train"}) + "\n")
    return str(p)


def _no_split(tmp_path):
    p = tmp_path / "nosplit.jsonl"
    p.write_text(json.dumps({"prompt": "a", "correct": " b", "incorrect": " c"}) + "\n")
    return str(p)


def test_hub_id_offline_is_a_data_error():
    with pytest.raises(DataError, match="could not be loaded from the Hub"):
        load_triplets("editkit-test-owner/definitely-not-a-dataset")
