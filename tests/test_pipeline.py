"""apply_recipe end to end on tiny random models: run directory, events, metrics, exact export, artifact."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from editkit import apply_recipe
from editkit.edit.edit import Edit
from editkit.run.events import read_events
from editkit.spec.recipe import load_recipe

TRIPLETS = [
    {"id": f"m-{i:03d}", "split": "train" if i < 12 else "test", "prompt": p, "correct": c, "incorrect": w}
    for i, (p, c, w) in enumerate(
        [
            ("Stealing from a blind beggar is", " wrong", " good"),
            ("Helping a lost child is", " good", " wrong"),
        ]
        * 10
    )
]

RECIPE = """\
name: tiny-{family}
model: {model}
method:
  name: heads
  heads: [[0, 1], [1, 2]]
data:
  target: {target}
eval:
  blimp: false
  robustness: {robustness}
  max_items: 8
  batch_size: 8
seed: 3
"""


def _write(tmp_path, tiny_dir, family, robustness=False):
    target = tmp_path / "moral.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in TRIPLETS))
    recipe = tmp_path / f"{family}.yaml"
    recipe.write_text(
        RECIPE.format(
            family=family, model=tiny_dir(family), target=target, robustness=str(robustness).lower()
        )
    )
    return recipe


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3", "gpt2"])
def test_apply_tiny_end_to_end(family, tmp_path, tiny_dir):
    recipe = _write(tmp_path, tiny_dir, family)
    res = apply_recipe(recipe, runs_root=tmp_path / "runs")
    run = res.run_dir
    assert run.parent == tmp_path / "runs" and run.name.startswith(f"tiny-{family}-")
    for f in (
        "recipe.yaml",
        "events.jsonl",
        "metrics.json",
        "edit/edit.json",
        "edit/tensors.safetensors",
        "model/config.json",
        "model/README.md",
        "model/editkit/edit.json",
        "model/editkit/run.json",
    ):
        assert (run / f).exists(), f

    # resolved recipe + hash saved; reloading it gives the same hash
    r = load_recipe(recipe)
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert (saved["method"]["name"], saved["method"]["heads"], saved["method"]["scale"]) == (
        "heads",
        [[0, 1], [1, 2]],
        0.0,
    )
    assert set(saved["method"]) == set(type(r.method).model_fields)  # every default is written out
    assert saved["eval"]["batch_size"] == 8 and saved["export"]["dtype"] == "same"
    m = json.loads((run / "metrics.json").read_text())
    assert m["recipe_hash"] == r.hash == res.metrics["recipe_hash"]

    # metrics: base/edited/control evaluated with the same keys; export checked
    assert set(m["base"]) == set(m["edited"]) == set(m["control"])
    assert {"target_accuracy", "perplexity", "drift_kl", "general_capability_score"} <= set(m["base"])
    assert m["base"]["drift_kl"] == pytest.approx(0.0, abs=1e-7)
    assert m["edited"]["drift_kl"] > 0
    assert m["export"]["max_abs_logit_diff"] <= 1e-4
    assert m["export"]["tied_embeddings"] is (family != "llama")

    # events: documented order of stages, one run_end ok
    ev = read_events(run)
    types = [e["type"] for e in ev]
    assert types[0] == "run_start" and types[-1] == "run_end" and ev[-1]["status"] == "ok"
    stages = [e["stage"] for e in ev if e["type"] == "stage_start"]
    assert stages == ["load", "eval_base", "fit", "eval_edited", "control", "checks", "export", "card"]
    assert [e["phase"] for e in ev if e["type"] == "eval"] == ["base", "edited", "control"]
    for stage in ("eval_base", "eval_edited", "control"):  # every evaluation stage has a total
        prog = [e for e in ev if e["type"] == "progress" and e["stage"] == stage]
        assert prog and all(isinstance(e["total"], int) and e["total"] > 0 for e in prog), stage
        assert prog[-1]["done"] == prog[-1]["total"], stage
        assert [e["done"] for e in prog] == sorted(e["done"] for e in prog), stage

    # the export loads with plain transformers and equals base + re-applied artifact, bit for bit
    exported = load_file(str(run / "model" / "model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(tiny_dir(family), dtype=torch.float32)
    Edit.load(run / "edit").merge_into(base)
    state = base.state_dict()
    for name, t in exported.items():
        assert torch.equal(state[name], t), name


def test_out_dir_resume_rules(tmp_path, tiny_dir):
    recipe = _write(tmp_path, tiny_dir, "llama")
    out = tmp_path / "myrun"
    apply_recipe(recipe, out=out)
    assert (out / ".editkit-run").exists()
    from editkit.errors import OutputError

    with pytest.raises(OutputError, match="is an existing editkit run; pass --resume"):
        apply_recipe(recipe, out=out)
    res = apply_recipe(recipe, out=out, overwrite=True)
    assert len([e for e in read_events(out) if e["type"] == "run_start"]) == 1
    assert res.metrics["export"]["max_abs_logit_diff"] <= 1e-4


def test_overrides_reach_the_run(tmp_path, tiny_dir):
    recipe = _write(tmp_path, tiny_dir, "llama")
    res = apply_recipe(recipe, overrides=["method.heads=[[1, 3]]", "seed=9"], runs_root=tmp_path / "runs")
    saved = yaml.safe_load((res.run_dir / "recipe.yaml").read_text())
    assert saved["method"]["heads"] == [[1, 3]] and saved["seed"] == 9
    assert res.edit.info["heads"] == [[1, 3]]


def test_crash_in_fit_leaves_error_event(tmp_path, tiny_dir, monkeypatch):
    from editkit.methods.heads.fit import HeadsMethod

    def boom(self, ctx):
        raise RuntimeError("simulated failure token=hf_abcdefghijklmnop")

    monkeypatch.setattr(HeadsMethod, "fit", boom)
    recipe = _write(tmp_path, tiny_dir, "llama")
    with pytest.raises(RuntimeError):
        apply_recipe(recipe, runs_root=tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    ev = read_events(run)
    err = next(e for e in ev if e["type"] == "error")
    assert err["stage"] == "fit" and err["exc_type"] == "RuntimeError"
    assert "hf_abcdefghijklmnop" not in (run / "events.jsonl").read_text()
    assert ev[-1] == {**ev[-1], "type": "run_end", "status": "error"}
    assert not (run / "model").exists()


def test_streaming_export_in_the_pipeline_equals_in_memory(tmp_path, tiny_dir):
    recipe = _write(tmp_path, tiny_dir, "qwen2")
    a = apply_recipe(recipe, out=tmp_path / "mem", overrides=["export.streaming=false", "eval.control=false"])
    b = apply_recipe(
        recipe, out=tmp_path / "stream", overrides=["export.streaming=true", "eval.control=false"]
    )
    assert (a.metrics["export"]["streaming"], b.metrics["export"]["streaming"]) == (False, True)
    assert b.metrics["export"]["max_abs_logit_diff"] <= 1e-4
    ta = load_file(str(tmp_path / "mem" / "model" / "model.safetensors"))
    tb = load_file(str(tmp_path / "stream" / "model" / "model.safetensors"))
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_sigterm_is_recorded_as_interrupted(tmp_path, tiny_dir):
    """kill (SIGTERM) mid-run ends the event log with run_end "interrupted", as Ctrl-C does, not a stale log."""
    import os
    import signal

    class Outside(Exception):
        pass

    def outside_handler(signum, frame):  # what the run must not reach (the default would kill pytest)
        raise Outside

    def kill_in_fit(ev):
        if ev["type"] == "stage_start" and ev["stage"] == "fit":
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, outside_handler)
    try:
        recipe = _write(tmp_path, tiny_dir, "llama")
        with pytest.raises(KeyboardInterrupt):
            apply_recipe(recipe, out=tmp_path / "run", listener=kill_in_fit)
        assert signal.getsignal(signal.SIGTERM) is outside_handler  # put back after the run
    finally:
        signal.signal(signal.SIGTERM, previous)
    ev = read_events(tmp_path / "run")
    assert ev[-1]["type"] == "run_end" and ev[-1]["status"] == "interrupted" and ev[-1]["signal"] == "SIGTERM"
    assert not any(e["type"] == "error" for e in ev)
