"""General text: the built-in corpus, the loader, and perplexity against a hand computation.

Fixtures here (tiny byte-level BPE tokenizer + tiny random Llama) are local to this module.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from editkit.data.general import BUILTIN_GENERAL_TEXT, load_general_text, perplexity
from editkit.errors import DataError
from tests.tiny import tiny_model

TEXTS = [
    "The kettle clicked off and steam curled up past the window.",
    "Short one.",
    "A fox crossed the frozen field at dawn, leaving a neat line of prints in the snow behind it.",
    "Rain again.",
    "She folded the map, put it in her pocket, and walked on towards the hills.",
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_model("llama")[1]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")[0]


def hand_perplexity(model, tokenizer, texts, max_length):
    """One text at a time, no padding, float64 cross-entropy: the definition written out."""
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text)["input_ids"][:max_length]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]), reduction="sum")
        total += float(nll)
        count += len(ids) - 1
    return math.exp(total / count)


def test_perplexity_matches_hand_computation(model, tokenizer):
    expected = hand_perplexity(model, tokenizer, TEXTS, max_length=256)
    assert perplexity(model, tokenizer, TEXTS, batch_size=3) == pytest.approx(expected, rel=1e-5)
    # A random model over a 320-token vocabulary is close to uniform: perplexity near the vocabulary size.
    assert 200 < expected < 500


def test_perplexity_truncates_at_max_length(model, tokenizer):
    expected = hand_perplexity(model, tokenizer, TEXTS, max_length=6)
    assert perplexity(model, tokenizer, TEXTS, max_length=6) == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(hand_perplexity(model, tokenizer, TEXTS, max_length=256), rel=1e-3)


def test_perplexity_is_padding_invariant(model, tokenizer):
    one = perplexity(model, tokenizer, TEXTS, batch_size=1)
    assert perplexity(model, tokenizer, TEXTS, batch_size=2) == pytest.approx(one, rel=1e-5)
    assert perplexity(model, tokenizer, TEXTS, batch_size=len(TEXTS)) == pytest.approx(one, rel=1e-5)
    # A different pad id must not change anything either: padded positions are masked and never scored.
    other = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, pad_token="<|endoftext|>", eos_token="<|endoftext|>"
    )
    assert perplexity(model, other, TEXTS, batch_size=len(TEXTS)) == pytest.approx(one, rel=1e-5)


def test_perplexity_rejects_texts_with_nothing_to_score(model, tokenizer):
    with pytest.raises(DataError, match="none of the 1 texts"):
        perplexity(model, tokenizer, ["a"])


def test_builtin_corpus_shape():
    rows = [json.loads(line) for line in BUILTIN_GENERAL_TEXT.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 120
    assert len({r["text"] for r in rows}) == len(rows)
    assert len({r["id"] for r in rows}) == len(rows)
    assert {r["split"] for r in rows} == {"train", "test"}
    train = sum(r["split"] == "train" for r in rows)
    assert 0.6 < train / len(rows) < 0.8
    for r in rows:
        assert 60 <= len(r["text"].split()) <= 150, r["id"]


def test_load_builtin_splits():
    rows = [json.loads(line) for line in BUILTIN_GENERAL_TEXT.read_text(encoding="utf-8").splitlines()]
    n_test = sum(r["split"] == "test" for r in rows)
    everything = load_general_text()
    assert everything.column_names == ["text"]
    assert len(everything) == len(rows)
    test = load_general_text(split="test")
    assert len(test) == n_test
    assert test[0]["text"] == next(r["text"] for r in rows if r["split"] == "test")
    assert len(load_general_text(split="train", limit=5)) == 5


def test_load_local_files(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n", encoding="utf-8")
    assert load_general_text(str(tmp_path / "a.txt"))["text"] == ["first line", "second line"]

    (tmp_path / "b.csv").write_text("body,split\nhello there,train\ngood night,test\n", encoding="utf-8")
    ds = load_general_text(str(tmp_path / "b.csv"), split="test", text_column="body")
    assert ds["text"] == ["good night"]

    (tmp_path / "c.jsonl").write_text('{"content": "x y z"}\n{"content": ""}\n', encoding="utf-8")
    assert load_general_text(str(tmp_path / "c.jsonl"), text_column="content")["text"] == ["x y z"]


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="general text file not found"):
        load_general_text(str(tmp_path / "missing.jsonl"))
    (tmp_path / "d.jsonl").write_text('{"body": "words"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no column 'text' \\(columns: body\\)"):
        load_general_text(str(tmp_path / "d.jsonl"))
    with pytest.raises(DataError, match="has no 'split' column"):
        load_general_text(str(tmp_path / "d.jsonl"), split="test", text_column="body")
    (tmp_path / "e.jsonl").write_text('{"text": "  "}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no non-empty rows"):
        load_general_text(str(tmp_path / "e.jsonl"))
    with pytest.raises(DataError, match="no rows with split 'dev'"):
        load_general_text(split="dev")
    with pytest.raises(DataError, match="unsupported suffix"):
        (tmp_path / "f.xml").write_text("<a/>", encoding="utf-8")
        load_general_text(str(tmp_path / "f.xml"))
