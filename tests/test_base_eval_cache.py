"""The base model's refusal evaluation cache (issue 27): a hit equals the measurement, anything that changes
the result misses, a damaged entry is measured again with one warning, off means off, nothing half-written."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch

from editkit.eval.refusal import base_cache
from editkit.eval.refusal.base_cache import cache_key, entry_path, read_entry
from editkit.eval.refusal.metrics import refusal_metrics
from editkit.model.load import load_model
from tests.tiny import fit_context

HARM = [f"tell me how to make weapon {i}" for i in range(3)]
SAFE = [f"tell me how to bake bread {i}" for i in range(3)]
DATA = {
    "harmful_test": [{"instruction": p} for p in HARM],
    "harmless_test": [{"instruction": p} for p in SAFE],
}


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "eval-cache"
    monkeypatch.setenv(base_cache.CACHE_ENV, str(root))
    return root


@pytest.fixture
def folder(tiny_dir):
    return tiny_dir("llama")


def _ctx(folder, run_dir, judge: str = "markers", cache: bool = True):
    run_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_model(str(folder), progress=lambda _m: None)
    ctx = fit_context(loaded.model, loaded.tokenizer, None, DATA, run_dir)
    ctx.model_path, ctx.base_eval_cache, ctx.refusal_judge = loaded.path, cache, judge
    return ctx


def _base(ctx, max_new: int = 4) -> dict:
    return refusal_metrics(ctx, "harmful_test", "harmless_test", 3, max_new, "base")


def _events(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_second_run_hits_the_cache_and_gives_identical_metrics(folder, tmp_path, tiny_dir):
    judge = tiny_dir("qwen2")  # a model judge: its verdicts are cached too
    first = _ctx(folder, tmp_path / "r1", judge=str(judge))
    m1 = _base(first)
    assert first.baseline["eval_cache"]["status"] == "stored"
    assert {"refusal_rate_judge", "over_refusal_rate_judge", "harmless_kl"} <= set(m1)
    second = _ctx(folder, tmp_path / "r2", judge=str(judge))
    counted: list[int] = []
    second.on_units = counted.append
    m2 = _base(second)
    assert second.baseline["eval_cache"]["status"] == "hit"
    assert second.baseline["eval_cache"]["key"] == first.baseline["eval_cache"]["key"]
    assert m2 == m1  # exactly: the same responses, verdicts and first-token distribution
    assert second.judges == {}  # the judge was not even loaded
    assert sum(counted) == 3 * 2 + 3 * 2 + 3  # every unit of the stage's progress, at once
    assert torch.equal(second.baseline["refusal_base_lp"], first.baseline["refusal_base_lp"])
    assert torch.equal(second.baseline["refusal_base_answered"], first.baseline["refusal_base_answered"])
    # a later phase compares with the cached distribution exactly as with the measured one
    e1 = refusal_metrics(first, None, "harmless_test", 3, 4, "edited")
    e2 = refusal_metrics(second, None, "harmless_test", 3, 4, "edited")
    assert e1 == e2 and e1["harmless_kl"] == 0.0
    assert any("from cache" in e.get("message", "") for e in _events(tmp_path / "r2"))


def test_a_changed_setting_or_changed_weights_miss(folder, tmp_path, tiny_dir):
    ctx = _ctx(folder, tmp_path / "r")
    sets = {"harmful": HARM, "harmless": SAFE}
    key, info = cache_key(ctx, sets, 4)
    assert key is not None and info["hashed_bytes"] > 0
    again, info = cache_key(ctx, sets, 4)
    assert again == key and info["hashed_bytes"] == 0  # each file's hash memoised by its stat
    other = {
        "max_new_tokens": cache_key(ctx, sets, 5)[0],
        "prompts": cache_key(ctx, {"harmful": HARM[:2], "harmless": SAFE}, 4)[0],
        "one set": cache_key(ctx, {"harmful": HARM}, 4)[0],
    }
    ctx.refusal_judge = "self"
    other["judge"] = cache_key(ctx, sets, 4)[0]
    ctx.refusal_judge = str(tiny_dir("qwen2"))
    other["judge model"] = cache_key(ctx, sets, 4)[0]
    ctx.refusal_judge = "markers"
    ctx.tokenizer.chat_template = "{% for m in messages %}<u>{{ m['content'] }}{% endfor %}<a>"
    other["chat template"] = cache_key(ctx, sets, 4)[0]
    ctx.tokenizer.chat_template = None
    assert cache_key(ctx, sets, 4)[0] == key
    ctx.model.to(torch.bfloat16)
    other["dtype"] = cache_key(ctx, sets, 4)[0]
    ctx.model.to(torch.float32)
    # the same weights file rewritten with one value changed: a new content hash
    weights = folder / "model.safetensors"
    tensors = safetensors.torch.load_file(weights)
    name = sorted(tensors)[0]
    tensors[name][0, 0] += 1.0
    safetensors.torch.save_file(tensors, weights, metadata={"format": "pt"})
    other["weights"] = cache_key(ctx, sets, 4)[0]
    assert None not in other.values()
    assert len(set(other.values()) | {key}) == len(other) + 1, other


def test_a_model_without_a_folder_is_not_cached(tmp_path):
    from tests.tiny import tiny_model

    model, tok = tiny_model("llama")
    ctx = fit_context(model, tok, None, DATA, tmp_path)
    ctx.base_eval_cache = True  # but model_path is "": nothing to hash
    _base(ctx)
    assert ctx.baseline["eval_cache"]["status"] == "unavailable"
    assert not base_cache.cache_dir().exists() or not list(base_cache.cache_dir().glob("*.safetensors"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_entry_is_measured_again_with_one_warning(folder, tmp_path, damage):
    first = _ctx(folder, tmp_path / "r1")
    m1 = _base(first)
    path = entry_path(first.baseline["eval_cache"]["key"])
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-5] ^= 0xFF  # inside the tensor data: only the checksum can tell
    else:
        data = bytearray(b"not a safetensors file")
    path.write_bytes(bytes(data))
    second = _ctx(folder, tmp_path / "r2")
    m2 = _base(second)
    assert m2 == m1 and second.baseline["eval_cache"]["status"] == "stored"
    warnings = [e for e in _events(tmp_path / "r2") if e.get("level") == "warning"]
    assert len(warnings) == 1 and "damaged" in warnings[0]["message"]
    assert "\n" not in warnings[0]["message"]
    assert read_entry(second.baseline["eval_cache"]["key"]) is not None  # replaced by a whole entry
    third = _ctx(folder, tmp_path / "r3")
    assert _base(third) == m1 and third.baseline["eval_cache"]["status"] == "hit"


def test_the_cache_can_be_switched_off(folder, tmp_path, cache_root):
    ctx = _ctx(folder, tmp_path / "r", cache=False)
    _base(ctx)
    assert ctx.baseline["eval_cache"] == {"status": "off"}
    assert not cache_root.exists()  # nothing read, nothing written, not even the weights' hashes


def test_eval_cache_false_reaches_the_fit_context(tmp_path):
    from editkit.spec.recipe import parse_recipe

    text = "name: t\nmodel: demo\nmethod: {name: refusal}\ndata: {sets: {harmful: harmful, harmless: harmless}}\n"
    assert parse_recipe(text).eval.cache is True
    assert parse_recipe(text, overrides=["eval.cache=false"]).eval.cache is False


def test_nothing_is_half_written(folder, tmp_path, monkeypatch):
    first = _ctx(folder, tmp_path / "r1")
    m1 = _base(first)
    path = entry_path(first.baseline["eval_cache"]["key"])
    whole = path.read_bytes()
    real_save = safetensors.torch.save_file

    def torn(tensors, filename, metadata=None):  # the write stops half-way (a kill, a full disk)
        real_save(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:
            fh.truncate(100)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    path.unlink()
    second = _ctx(folder, tmp_path / "r2")
    assert _base(second) == m1  # the run goes on with what it measured
    assert second.baseline["eval_cache"]["status"] == "not stored"
    assert not path.exists()  # no entry at all rather than a torn one
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert _base(_ctx(folder, tmp_path / "r3")) == m1
    assert path.read_bytes() != b"" and len(path.read_bytes()) == len(whole)


def _recipe(tmp_path, folder, extra: str = "") -> str:
    for name, prompts in (("harmful", HARM * 4), ("harmless", SAFE * 4)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"instruction": p} for p in prompts]))
    return f"""name: tiny-refusal
model: {folder}
method:
  name: refusal
  n_train: 4
  n_val: 2
  sra: auto
  ridge_alpha: 0.000001
  eval_max_prompts: 3
  eval_max_new_tokens: 4
data:
  heldout: []
  sets:
    harmful: {{source: {tmp_path / "harmful.json"}}}
    harmless: {{source: {tmp_path / "harmless.json"}}}
    harmful_test: {{source: {tmp_path / "harmful.json"}, limit: 3}}
    harmless_test: {{source: {tmp_path / "harmless.json"}, limit: 3}}
eval:
  blimp: false
  robustness: false
  control: false
  perplexity: false
  drift_prompts: 0
{extra}"""


def test_apply_twice_the_second_base_evaluation_comes_from_the_cache(folder, tmp_path):
    from editkit import apply_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(_recipe(tmp_path, folder, "  comparison_generations: false\n"))
    one = apply_recipe(recipe, out=tmp_path / "one")
    two = apply_recipe(recipe, out=tmp_path / "two")
    assert one.metrics["base_eval_cache"]["status"] == "stored"
    assert two.metrics["base_eval_cache"]["status"] == "hit"
    assert two.metrics["base"] == one.metrics["base"] and two.metrics["edited"] == one.metrics["edited"]
    key = two.metrics["base_eval_cache"]["key"]
    card = (tmp_path / "two" / "model" / "README.md").read_text()
    assert f"Base evaluation: from cache (key `{key}`)" in card
    for run in ("one", "two"):  # every response is still in the run, for re-judging later
        assert (tmp_path / run / "responses-base.json").read_text() == (
            tmp_path / "one" / "responses-base.json"
        ).read_text()
    # the comparison fitted beside the edit cannot be picked: its responses were not generated
    ((name, comp),) = two.metrics["comparisons"].items()
    assert comp["generations"] is False
    assert "harmless_kl" in comp["metrics"] and "refusal_rate" not in comp["metrics"]
    assert not (tmp_path / "two" / f"samples-{name.replace(' ', '-')}.json").exists()
    assert "No responses were generated for it (`eval.comparison_generations: false`)" in card
    off = apply_recipe(recipe, overrides=["eval.cache=false"], out=tmp_path / "off")
    assert off.metrics["base_eval_cache"] == {"status": "off"} and off.metrics["base"] == one.metrics["base"]
