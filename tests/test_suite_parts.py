"""The per-phase evaluation suite as registered parts (editkit.eval.parts.PARTS): the rows each part announces
are the rows counted, drift reads the base phase's distribution from an explicit Baseline, and a part added by
one registry entry shows up in the metrics."""

from __future__ import annotations

import pytest
import torch

from editkit.data.general import perplexity
from editkit.eval.parts import PARTS, Baseline, SuitePart
from editkit.eval.suite import EvalData, evaluate, evaluation_units
from tests.tiny import CORPUS, TRIPLETS, tiny_model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_model("llama")


def _data() -> EvalData:
    items = [{"prompt": p, "correct": c, "incorrect": w} for p, c, w in TRIPLETS]
    return EvalData(
        target_test=items[:6],
        heldout={"other": items[6:]},
        general_test=list(CORPUS[:3]),
        parts={
            "perplexity": list(CORPUS[:3]),
            "blimp": {"agreement": [{"sentence_good": "The cat runs.", "sentence_bad": "The cat run."}] * 2},
            "drift": ["The weather today", "Once upon a time"],
            "generations": {"prompts": [items[0]["prompt"], items[1]["prompt"]], "tokens": 3},
        },
    )


def test_parts_run_in_registry_order_and_count_what_they_announce(tiny):
    model, tok = tiny
    data, rows, said, samples = _data(), [], [], {}
    base = Baseline()
    m = evaluate(
        model,
        tok,
        data,
        phase="base",
        baseline=base,
        batch_size=4,
        perplexity_fn=perplexity,
        progress=said.append,
        on_rows=rows.append,
        samples=samples,
    )
    units = 2 * 6 + 2 * (len(TRIPLETS) - 6) + 3 + 4 + 2 + 2
    assert sum(rows) == evaluation_units(data, perplexity) == units
    assert said == [
        "target accuracy",
        "held-out: other",
        "perplexity",
        "BLiMP",
        "drift",
        "greedy generations",
    ]
    assert list(PARTS) == ["target", "heldout", "perplexity", "blimp", "drift", "generations"]
    # the generations are samples, not numbers: beside the phase's metrics, never in them
    assert [r["prompt"] for r in samples["generations"]] == data.parts["generations"]["prompts"]
    assert all(isinstance(r["text"], str) for r in samples["generations"]) and "generations" not in m
    assert {
        "target_accuracy",
        "heldout/other",
        "general_capability_score",
        "perplexity",
        "blimp_accuracy",
    } <= set(m)
    assert m["drift_kl"] == 0.0 and base.first_token_logprobs.shape[0] == 2
    assert evaluation_units(data) == sum(rows) - 3  # no perplexity function: no perplexity rows


def test_drift_compares_with_the_baseline_it_is_given(tiny):
    model, tok = tiny
    data = _data()
    with pytest.raises(RuntimeError, match="drift: phase 'edited' evaluated before the base phase"):
        evaluate(model, tok, data, phase="edited", batch_size=4)
    base = Baseline()
    evaluate(model, tok, data, phase="base", baseline=base, batch_size=4)
    layer = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        w = layer.weight.clone()
        layer.weight.mul_(0.0)
    try:
        edited = evaluate(model, tok, data, phase="edited", baseline=base, batch_size=4)
    finally:
        with torch.no_grad():
            layer.weight.copy_(w)
    assert edited["drift_kl"] > 0
    again = evaluate(model, tok, data, phase="edited", baseline=base, batch_size=4)
    assert again["drift_kl"] == 0.0  # the same weights as the base phase


def test_a_registered_part_is_measured(tiny, monkeypatch):
    class PromptCount(SuitePart):
        name, label = "prompts", "prompt count"

        def units(self, data, opts):
            return len(data.parts["drift"])

        def run(self, model, tokenizer, data, opts, on_batch, baseline, phase):
            on_batch(len(data.parts["drift"]))
            return {"prompt_count": float(len(data.parts["drift"]))}

    monkeypatch.setitem(PARTS, "prompts", PromptCount())
    model, tok = tiny
    rows: list[int] = []
    m = evaluate(model, tok, _data(), batch_size=4, on_rows=rows.append)
    assert m["prompt_count"] == 2.0 and sum(rows) == evaluation_units(_data())


def test_generations_run_on_the_base_and_edited_phases_only_and_fold_into_one_row_per_prompt(tiny):
    model, tok = tiny
    data, part = _data(), PARTS["generations"]
    got: dict[str, list] = {}
    base = Baseline()
    for phase in ("base", "edited", "control", "plain"):
        samples: dict = {}
        rows: list[int] = []
        evaluate(
            model,
            tok,
            data,
            phase=phase,
            baseline=base,
            batch_size=4,
            samples=samples,
            on_rows=rows.append,
        )
        assert sum(rows) == evaluation_units(data, None, phase), phase
        got[phase] = samples.get("generations")
    assert got["control"] is None and got["plain"] is None  # the random control and comparisons: no samples
    assert evaluation_units(data, None, "base") - evaluation_units(data, None, "control") == 2
    section = part.fold(None, "base", got["base"])
    section = part.fold(section, "edited", got["edited"])
    prompts = data.parts["generations"]["prompts"]
    assert section == [
        {"prompt": p, "base": b["text"], "edited": e["text"]}
        for p, b, e in zip(prompts, got["base"], got["edited"], strict=True)
    ]
    assert got["base"] == got["edited"]  # the same weights: greedy decoding is deterministic
    with pytest.raises(RuntimeError, match="other prompts"):
        part.fold(section, "edited", got["edited"][::-1])
    card = part.card({"generations": section})
    assert card[0] == "## Greedy generations" and card.count(f"- prompt: `{prompts[0]}`") == 1
    assert sum(line.startswith("  - edited: `") for line in card) == 2
    assert part.card({}) == []
