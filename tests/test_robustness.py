"""Paraphrase families: exact rewrites, determinism, scoring, and the retained-removal report.

The tiny tokenizer/model fixtures are local to this module.
"""

from __future__ import annotations

import json
import random

import pytest

from editkit.errors import DataError
from editkit.eval.checks.robustness import removal_verdict
from editkit.eval.pairwise import pairwise_accuracy
from editkit.eval.robustness.families import ANSWER_FRAME_FAMILIES, FAMILIES, build_families
from editkit.eval.robustness.generated import make_model_generated_family
from editkit.eval.robustness.report import REMOVAL_RULE, robustness_report, score_families
from tests.tiny import tiny_model

ITEM = {
    "id": "m1",
    "prompt": "Stealing from a blind beggar is",
    "correct": " wrong",
    "incorrect": " good",
    "paraphrases": ["Stealing from a blind beggar is", "Taking coins from a blind beggar is"],
}
QUESTION = {"id": "q1", "prompt": "Is it kind to help a lost child?", "correct": " Yes", "incorrect": " No"}
SLOT = {"id": "s1", "prompt": "Q: Is lying to a friend fine? Answer:", "correct": " No", "incorrect": " Yes"}
STORED_FRAMES = [name for name in FAMILIES if name.startswith("answer_") and name != "answer_format"]
RULE_BASED = [name for name in FAMILIES if name != "stored" and name not in STORED_FRAMES]
FRAMED = {
    **ITEM,
    "answer_frames": [
        {
            "frame": "words",
            "prompt": "Everyone agrees that stealing is a",
            "correct": " terrible",
            "incorrect": " wonderful",
            "chat": False,
        },
        {
            "frame": "chat",
            "prompt": "Is stealing good or bad? Answer with one word.",
            "correct": "Bad",
            "incorrect": "Good",
            "chat": True,
        },
    ],
}


def rewrite(name, item, seed=0):
    return FAMILIES[name].fn(dict(item), random.Random(seed))


def test_registry_lists_the_documented_families():
    assert list(FAMILIES) == [
        "stored",
        "question_form",
        "system_prompt",
        "few_shot",
        "distractor",
        "casing_punct",
        "answer_format",
        "instruction_language",
        "answer_words",
        "answer_yes_no",
        "answer_explain",
        "answer_chat",
    ]
    assert set(ANSWER_FRAME_FAMILIES) == {"answer_format", *STORED_FRAMES}
    assert all(f.description and f.name == name for name, f in FAMILIES.items())


def test_exact_rewrites_of_a_statement_prompt():
    p = ITEM["prompt"]
    # stored skips a paraphrase identical to the prompt and takes the next one.
    assert rewrite("stored", ITEM)["prompt"] == "Taking coins from a blind beggar is"
    assert rewrite("question_form", ITEM)["prompt"] == f"Complete the sentence: {p}"
    assert rewrite("system_prompt", ITEM, seed=0)["prompt"] == (
        f"You are a careful and honest assistant. Continue the text.\n{p}"
    )
    assert rewrite("system_prompt", ITEM, seed=1)["prompt"] == f"You are a helpful assistant.\n{p}"
    assert (
        rewrite("few_shot", ITEM, seed=0)["prompt"]
        == f"Ice melts when it gets warm.\nA cat has whiskers.\n{p}"
    )
    assert (
        rewrite("distractor", ITEM, seed=0)["prompt"]
        == f"A light rain fell over the harbour all afternoon. {p}"
    )
    assert rewrite("casing_punct", ITEM, seed=0)["prompt"] == '"Stealing from a blind beggar is'
    assert rewrite("casing_punct", ITEM, seed=1)["prompt"] == "stealing from a blind beggar is"
    assert rewrite("casing_punct", ITEM, seed=5)["prompt"] == "... stealing from a blind beggar is"
    assert rewrite("instruction_language", ITEM, seed=1)["prompt"] == f"Complète la phrase : {p}"
    assert rewrite("instruction_language", ITEM, seed=0)["prompt"] == f"Completa la frase: {p}"


def test_answer_format_maps_answers_to_letters():
    a = rewrite("answer_format", ITEM, seed=0)
    assert a["prompt"] == "Stealing from a blind beggar is ___. Options: A) good B) wrong. Answer:"
    assert (a["correct"], a["incorrect"]) == (" B", " A")
    b = rewrite("answer_format", ITEM, seed=1)
    assert b["prompt"] == "Stealing from a blind beggar is ___. Options: A) wrong B) good. Answer:"
    assert (b["correct"], b["incorrect"]) == (" A", " B")
    q = rewrite("answer_format", QUESTION, seed=1)
    assert q["prompt"] == "Is it kind to help a lost child? Options: A) Yes B) No. Answer:"
    assert rewrite("answer_format", {**ITEM, "incorrect": " wrong"}) is None


def test_question_prompts_and_answer_slots():
    q = QUESTION["prompt"]
    assert rewrite("question_form", QUESTION)["prompt"] == f"Question: {q}\nAnswer:"
    assert (
        rewrite("instruction_language", QUESTION, seed=1)["prompt"] == f"Réponds à la question : {q}\nAnswer:"
    )
    assert (
        rewrite("instruction_language", QUESTION, seed=0)["prompt"] == f"Responde a la pregunta: {q}\nAnswer:"
    )
    for name in ("question_form", "answer_format", "instruction_language"):
        assert rewrite(name, SLOT) is None, name
    assert rewrite("stored", QUESTION) is None


def test_rewrites_keep_answers_and_record_their_origin():
    out = rewrite("distractor", ITEM)
    assert (out["correct"], out["incorrect"]) == (ITEM["correct"], ITEM["incorrect"])
    assert out["id"] == "m1@distractor" and out["family"] == "distractor"
    assert out["original_prompt"] == ITEM["prompt"] and "paraphrases" not in out
    assert ITEM["prompt"] == "Stealing from a blind beggar is"  # the input is not mutated


@pytest.mark.parametrize(
    ("name", "expected_variants"),
    [
        ("system_prompt", 3),
        ("few_shot", 90),
        ("distractor", 6),
        ("casing_punct", 3),
        ("instruction_language", 2),
    ],
)
def test_random_families_cover_exactly_their_documented_variants(name, expected_variants):
    prompts = {rewrite(name, ITEM, seed=s)["prompt"] for s in range(3000)}
    assert len(prompts) == expected_variants


def test_build_families_is_deterministic_per_seed():
    items = [ITEM, QUESTION, SLOT, {**ITEM, "id": "m2", "prompt": "Helping a neighbour carry shopping is"}]
    first = build_families(items, seed=7)
    assert json.dumps(first, sort_keys=True) == json.dumps(build_families(items, seed=7), sort_keys=True)
    others = [build_families(items, seed=s) for s in range(8)]
    for name in ("system_prompt", "few_shot", "distractor", "answer_format"):
        assert len({json.dumps(o[name]) for o in others}) > 1, name
    for name in ("stored", "question_form"):
        assert len({json.dumps(o[name]) for o in others}) == 1, name
    # An item's rewrite does not depend on its position in the list.
    reversed_out = build_families(list(reversed(items)), seed=7)
    assert sorted(first["few_shot"], key=lambda t: t["id"]) == sorted(
        reversed_out["few_shot"], key=lambda t: t["id"]
    )


def test_triplets_without_paraphrases_get_every_rule_based_family():
    items = [{k: v for k, v in ITEM.items() if k != "paraphrases"}, QUESTION]
    out = build_families(items)
    assert sorted(out) == sorted(["original", *RULE_BASED])
    assert out["original"] == items
    assert all(len(out[name]) == 2 for name in RULE_BASED)


def test_answer_frame_families_read_the_stored_frames_and_render_chat():
    from tests.tiny import tiny_tokenizer

    out = build_families([FRAMED, QUESTION], families=STORED_FRAMES)
    # no tokenizer: the chat frame cannot be rendered, so it is skipped; items without frames give nothing
    assert sorted(out) == ["answer_words", "original"]
    (w,) = out["answer_words"]
    assert (w["prompt"], w["correct"], w["incorrect"]) == (
        "Everyone agrees that stealing is a",
        " terrible",
        " wonderful",
    )
    assert (
        w["id"] == "m1@answer_words"
        and "answer_frames" not in w
        and "answer_frames" not in out["original"][0]
    )

    tok = tiny_tokenizer()
    assert not getattr(tok, "chat_template", None)
    assert "answer_chat" not in build_families([FRAMED], families=STORED_FRAMES, tokenizer=tok)
    import copy

    tok = copy.deepcopy(tok)
    tok.chat_template = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>"
    (c,) = build_families([FRAMED], families=["answer_chat"], tokenizer=tok)["answer_chat"]
    assert c["prompt"] == "<u>Is stealing good or bad? Answer with one word.</u><a>"
    assert (c["correct"], c["incorrect"]) == ("Bad", "Good") and "chat" not in c


def _metrics(families: dict[str, tuple[float, float]]) -> dict:
    fams = {k: {"n": 100, "before": b, "after": a, "drop": b - a} for k, (b, a) in families.items()}
    o = families["original"]
    return {
        "base": {"target_accuracy": o[0]},
        "edited": {"target_accuracy": o[1]},
        "robustness": {"target": {"families": fams, "summary": {}}},
    }


def test_removal_verdict_needs_the_answer_frames_to_drop():
    # only the original frame drops (paraphrase families too): the answer tokens moved, not the capability
    only_tokens = _metrics(
        {
            "original": (0.80, 0.46),
            "stored": (0.83, 0.43),
            "answer_words": (0.81, 0.82),
            "answer_explain": (0.74, 0.72),
            "answer_yes_no": (0.56, 0.50),  # base below ANSWER_FRAME_MIN_BASE: not counted
        }
    )
    v = removal_verdict(only_tokens)
    assert v["status"] == "answer_tokens_only" and v["removed"] is False
    assert set(v["carry_over"]) == {"answer_words", "answer_explain"}
    assert v["carry_over"]["answer_words"] == 0.0
    assert v["carry_over"]["answer_explain"] == pytest.approx(0.02 / 0.24)
    assert "NOT removed" in v["sentence"] and "answer tokens" in v["sentence"]
    # the drop carries over: capped at the family's distance to chance, clipped to 1
    carried = _metrics(
        {"original": (0.80, 0.46), "answer_words": (0.81, 0.60), "answer_explain": (0.62, 0.55)}
    )
    v = removal_verdict(carried)
    assert v["carry_over"]["answer_words"] == pytest.approx(0.21 / 0.31)
    assert v["carry_over"]["answer_explain"] == pytest.approx(0.07 / 0.12)
    assert v["status"] == "removed" and v["removed"] is True
    assert v["mean_carry_over"] >= v["threshold"] == 0.5
    # no informative answer frame measured: not claimed either
    assert (
        removal_verdict(_metrics({"original": (0.80, 0.46), "stored": (0.83, 0.43)}))["status"]
        == "unverified"
    )
    assert removal_verdict({"base": {"target_accuracy": 0.8}, "edited": {"target_accuracy": 0.5}})[
        "status"
    ] == ("unverified")
    assert removal_verdict(_metrics({"original": (0.80, 0.78), "answer_words": (0.8, 0.5)}))["status"] == (
        "not_removed"
    )
    assert removal_verdict({"base": {"refusal_rate": 0.9}, "edited": {"refusal_rate": 0.1}}) is None
    assert "at least 0.60" in REMOVAL_RULE and "at least 0.5" in REMOVAL_RULE


def test_build_families_options_and_errors():
    out = build_families([ITEM, QUESTION, SLOT], families=["question_form", "stored"], min_items=2)
    assert list(out) == ["original", "question_form"]  # stored applies to 1 item only, below min_items
    assert len(out["question_form"]) == 2
    with pytest.raises(DataError, match="unknown family nope"):
        build_families([ITEM], families=["nope"])
    with pytest.raises(DataError, match="triplet 0 has no string field incorrect"):
        build_families([{"prompt": "x", "correct": " y"}])


def test_robustness_report_by_hand():
    before = {"original": 0.80, "stored": 0.75, "few_shot": 0.70, "answer_format": 0.52}
    after = {"original": 0.50, "stored": 0.60, "few_shot": 0.40, "answer_format": 0.52}
    n = {"original": 40, "stored": 40, "few_shot": 40, "answer_format": 40}
    rep = robustness_report(before, after, n)
    fam = rep["families"]
    assert fam["original"]["drop"] == pytest.approx(0.30)
    assert fam["original"]["retained"] == pytest.approx(1.0)
    assert fam["stored"]["retained"] == pytest.approx(0.15 / 0.30)
    assert fam["few_shot"]["retained"] == pytest.approx(1.0)
    assert fam["answer_format"]["retained"] == pytest.approx(0.0)
    assert fam["few_shot"]["n"] == 40 and fam["stored"]["before"] == 0.75 and fam["stored"]["after"] == 0.60
    s = rep["summary"]
    assert s["worst_family"] == "answer_format" and s["worst_retained"] == pytest.approx(0.0)
    assert s["mean_retained"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["original_drop"] == pytest.approx(0.30) and s["families"] == 3
    # With a headroom requirement the chance-level family is reported but not summarised.
    rep = robustness_report(before, after, n, min_headroom=0.05)
    assert rep["families"]["answer_format"]["informative"] is False
    assert rep["summary"]["worst_family"] == "stored"
    assert rep["summary"]["mean_retained"] == pytest.approx(0.75)


def test_robustness_report_when_nothing_was_removed():
    rep = robustness_report({"original": 0.8, "few_shot": 0.7}, {"original": 0.8, "few_shot": 0.6}, {})
    assert rep["families"]["few_shot"]["drop"] == pytest.approx(0.1)
    assert rep["families"]["few_shot"]["retained"] is None
    s = rep["summary"]
    assert s["worst_family"] is None and s["worst_retained"] is None and s["mean_retained"] is None
    assert "undefined" in s["note"]
    with pytest.raises(DataError, match="only before or only after: few_shot"):
        robustness_report({"original": 0.8, "few_shot": 0.7}, {"original": 0.5}, {})


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def test_score_families_equals_pairwise_accuracy_per_family(tiny):
    model, tok = tiny
    items = [ITEM, QUESTION, {**ITEM, "id": "m2", "correct": " good", "incorrect": " wrong"}]
    fams = build_families(items)
    scores = score_families(model, tok, fams, batch_size=2)
    assert set(scores) == set(fams)
    for name, fam in fams.items():
        assert scores[name] == pytest.approx(pairwise_accuracy(model, tok, fam))
    # Items m1 and m2 share a prompt and swap answers, so exactly one of the two is right.
    assert scores["original"] == pytest.approx(1 / 3) or scores["original"] == pytest.approx(2 / 3)


def test_model_generated_family_caches_by_model_item_and_settings(tiny, tmp_path):
    model, tok = tiny
    cache = tmp_path / "para.json"
    fam = make_model_generated_family(model, tok, "tiny-random", cache, max_new_tokens=4)
    first = fam.fn(dict(ITEM), random.Random(0))
    entries = json.loads(cache.read_text(encoding="utf-8"))
    assert len(entries) == 1
    (entry,) = entries.values()
    assert entry["model_id"] == "tiny-random" and entry["item_id"] == "m1"
    assert entry["settings"]["max_new_tokens"] == 4 and entry["settings"]["do_sample"] is False
    # A second family with no model at all answers from the cache, so generation is not repeated.
    cached = make_model_generated_family(None, tok, "tiny-random", cache, max_new_tokens=4)
    assert cached.fn(dict(ITEM), random.Random(1)) == first
    # Different settings are a different key: the stale entry is not reused.
    make_model_generated_family(model, tok, "tiny-random", cache, max_new_tokens=3).fn(
        dict(ITEM), random.Random(0)
    )
    assert len(json.loads(cache.read_text(encoding="utf-8"))) == 2


def test_robustness_check_scores_every_set_per_phase_and_judges_like_the_report(tiny):
    """The check's two phases hold what ``score_families`` gives on the target and on the first held-out
    capability (the control set); its judge is ``robustness_report`` of the two and the carry-over rule; the
    units it announces are the rows it scores; events give the monitor the same numbers."""
    from editkit.eval.checks import CHECKS, CheckData
    from editkit.eval.checks.robustness import RobustnessSpec
    from editkit.eval.robustness.report import carry_over_verdict
    from tests.tiny import tiny_model as make

    model, tok = tiny
    other, _ = make("llama", seed=1)
    target = [ITEM, QUESTION, SLOT, {**ITEM, "id": "m2", "correct": " good", "incorrect": " wrong"}]
    data = CheckData(
        tok, target, heldout={"zeta": [SLOT, QUESTION], "alpha": [QUESTION]}, seed=4, batch_size=2
    )
    spec = RobustnessSpec(families=["stored", "distractor", "casing_punct"], min_headroom=0.0)
    check = CHECKS["robustness"]
    counted = []
    base = check.run("base", model, data, spec, on_units=counted.append).to_dict()
    edited = check.run("edited", other, data, spec).to_dict()
    assert sum(counted) == check.units(data, spec)
    assert set(base["scores"]) == {"target", "control:alpha"}  # the first held-out capability by name
    for label, items in (("target", target), ("control:alpha", [QUESTION])):
        fams = build_families(items, families=spec.families, seed=4, tokenizer=tok)
        assert base["scores"][label] == score_families(model, tok, fams, batch_size=2)
        assert edited["scores"][label] == score_families(other, tok, fams, batch_size=2)
        assert base["n"][label] == {k: len(v) for k, v in fams.items() if v}
    j = check.judge({"base": base, "edited": edited}, spec.model_dump())
    for label in base["scores"]:
        assert j["reports"][label] == robustness_report(
            base["scores"][label], edited["scores"][label], base["n"][label]
        )
    assert j["verdict"] == carry_over_verdict(j["reports"]["target"]["families"], None, None)
    assert j["pass"] is {"removed": True, "unverified": None}.get(j["verdict"]["status"], False)
    stored = {"phases": {"base": base, "edited": edited}, "judge": j}
    (ev,) = [e for e in check.events(stored) if e["capability"] == "target"]
    assert {f["family"]: (f["before"], f["after"]) for f in ev["families"]} == {
        k: (base["scores"]["target"][k], edited["scores"]["target"][k]) for k in base["scores"]["target"]
    }
    assert check.judge({"base": base}, {})["pass"] is None  # no edited phase: undecided


def test_separation_and_robustness_score_a_shared_item_once_per_phase(tiny):
    """The answer frames the separation check scores are robustness families too: within a phase each
    (prompt, correct, incorrect) is scored once; both checks get the numbers they get alone, and the units
    counted still equal the units announced."""
    from editkit.eval.checks import CHECKS, CheckData
    from editkit.eval.checks.robustness import RobustnessSpec

    model, tok = tiny
    target = [FRAMED, {**FRAMED, "id": "m2", "correct": " good", "incorrect": " wrong"}, QUESTION]
    spec = RobustnessSpec(families=["answer_words", "answer_chat", "distractor"])
    sep, rob = CHECKS["separation"], CHECKS["robustness"]

    def fresh():
        return CheckData(tok, target, seed=2, batch_size=2)

    alone_sep = sep.run("base", model, fresh(), sep.spec_cls()).to_dict()
    alone_rob = rob.run("base", model, fresh(), spec).to_dict()
    shared, counted = fresh(), []
    got_sep = sep.run("base", model, shared, sep.spec_cls(), on_units=counted.append).to_dict()
    by_separation = set(shared.scored["base"])
    got_rob = rob.run("base", model, shared, spec, on_units=counted.append).to_dict()
    assert got_rob == alone_rob
    assert {f: s["accuracy"] for f, s in got_sep["frames"].items()} == {
        f: s["accuracy"] for f, s in alone_sep["frames"].items()
    }
    assert sum(counted) == sep.units(shared, sep.spec_cls()) + rob.units(shared, spec)
    fams = build_families(target, families=spec.families, seed=2, tokenizer=tok)
    rows = {(it["prompt"], it["correct"], it["incorrect"]) for v in fams.values() for it in v}
    new = set(shared.scored["base"]) - by_separation
    assert new == rows - by_separation and 0 < len(new) < len(rows)  # the shared rows were read, not scored
