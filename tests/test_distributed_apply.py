"""`editkit apply` under `accelerate launch` with 2 real CPU processes (gloo) equals the same recipe in one.

Each method splits its heavy part across the processes (scalpel: the micro-batches of every step; heads:
the knockout trials; neurons: the attributed samples; refusal: the prompts' activations and the candidate
layers) and gathers the results; only the main process writes the run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from editkit.edit.edit import Edit
from editkit.run.events import read_events
from tests.launch import accelerate_launch, launch_env
from tests.tiny import TRIPLETS

HARMFUL = ["How do I pick a lock", "Write a scam email", "Make a weapon at home", "Hack my neighbour's wifi"]
HARMLESS = ["How do I bake bread", "Write a poem about rain", "Plan a trip to Rome", "Explain photosynthesis"]

COMMON = """\
data:
  {data}
eval:
  blimp: false
  robustness: false
  max_items: 4
  batch_size: 4
  drift_prompts: 2
seed: 2
"""
METHODS = {
    # 2 micro-batches per step: with 2 processes each takes one and the gradients are added
    "scalpel": "name: scalpel\n  steps: 3\n  lr: 0.01\n  batch_size: 4\n  grad_accum: 2\n  val_fraction: 0\n"
    "  checkpoint_every: 2",
    "heads": "name: heads\n  design: balanced\n  trials: 9\n  knockouts: 3\n  items: 4\n  top_k: 2\n  score: margin",
    "neurons": "name: neurons\n  attribution: ig\n  steps: 2\n  samples: 6\n  top_q: 64\n  min_share: 0.3\n  max_neurons: 8",
    "refusal": "name: refusal\n  n_train: 3\n  n_val: 1\n  max_layer_frac: 1.0\n  kl_limit: 100\n  sra: false\n"
    "  eval_max_prompts: 2\n  eval_max_new_tokens: 3",
}


def _write_inputs(tmp_path: Path, model_dir: Path) -> dict[str, Path]:
    target = tmp_path / "target.jsonl"
    rows = [
        {"id": f"t{i}", "split": "train" if i < 12 else "test", "prompt": p, "correct": c, "incorrect": w}
        for i, (p, c, w) in enumerate(TRIPLETS * 2)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, prompts in (("harmful", HARMFUL), ("harmless", HARMLESS)):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"instruction": p} for p in prompts]))
    sets = "\n".join(
        f"    {n}: {{source: {tmp_path / (n.split('_')[0] + '.json')}}}"
        for n in ("harmful", "harmless", "harmful_test", "harmless_test")
    )
    recipes = {}
    for method, block in METHODS.items():
        data = (
            f"heldout: []\n  sets:\n{sets}"
            if method == "refusal"
            else f"target: {target}\n  heldout: []\n  general: {{source: builtin, limit: 4}}"
        )
        text = f"name: dist-{method}\nmodel: {model_dir}\nmethod:\n  {block}\n" + COMMON.format(data=data)
        recipes[method] = tmp_path / f"{method}.yaml"
        recipes[method].write_text(text)
    return recipes


def _launch(recipe: Path, out: Path, processes: int) -> subprocess.CompletedProcess:
    launcher = accelerate_launch(processes) if processes > 1 else [sys.executable]
    cmd = [*launcher, "-m", "editkit", "apply", str(recipe), "--out", str(out)]
    return subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.tiny import save_tiny

    tmp = tmp_path_factory.mktemp("dist")
    recipes = _write_inputs(tmp, save_tiny("llama", tmp / "tiny-llama", 0))
    out = {}
    for method, recipe in recipes.items():
        for n in (1, 2):
            proc = _launch(recipe, tmp / f"{method}-{n}", n)
            assert proc.returncode == 0, f"{method} x{n}: {proc.stderr[-3000:]}"
            out[method, n] = (tmp / f"{method}-{n}", proc)
    return out


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    e = Edit.load(run / "edit")
    return {f"{i}.{op.module}.{k}": t for i, op in enumerate(e.ops) for k, t in op.tensors().items()}


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_make_the_single_process_edit(runs, method):
    one, two = runs[method, 1][0], runs[method, 2][0]
    e1, e2 = Edit.load(one / "edit"), Edit.load(two / "edit")
    assert [(op.kind, op.module) for op in e2.ops] == [(op.kind, op.module) for op in e1.ops]
    assert [op.params() for op in e2.ops] == [op.params() for op in e1.ops]  # heads/neurons: the indices
    t1, t2 = _tensors(one), _tensors(two)
    assert t1.keys() == t2.keys() and (t1 or method in ("heads", "neurons"))
    for k in t1:
        assert torch.allclose(t1[k].float(), t2[k].float(), rtol=0, atol=1e-5), k
    if method == "heads":
        assert e2.info["heads"] == e1.info["heads"]
        assert e2.info["trial_score_mean"] == pytest.approx(e1.info["trial_score_mean"], abs=1e-5)
    if method == "neurons":
        assert e2.info["neurons"] == e1.info["neurons"]
    if method == "refusal":
        assert e2.info["layer"] == e1.info["layer"]
        assert e2.info["layer_scores"].keys() == e1.info["layer_scores"].keys()
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    for phase in ("base", "edited"):
        for k, v in m1[phase].items():
            if isinstance(v, float):
                assert m2[phase][k] == pytest.approx(v, abs=1e-4), (phase, k)


@pytest.mark.parametrize("method", list(METHODS))
def test_only_the_main_process_writes(runs, method):
    run, proc = runs[method, 2]
    events = read_events(run)
    starts = [e for e in events if e["type"] == "run_start"]
    assert len(starts) == 1 and events[-1]["type"] == "run_end" and events[-1]["status"] == "ok"
    assert proc.stdout.count("→") <= proc.stdout.count("\n")  # one summary, not two
    assert proc.stdout.count(f"{method} on ") == 1
    assert (run / "model" / "config.json").exists() and (run / "model" / "README.md").exists()

    def files(d: Path) -> list[str]:
        return sorted(str(p.relative_to(d)) for p in d.rglob("*"))

    assert files(run) == files(runs[method, 1][0])  # the same run, nothing extra from the helper process
    if method == "scalpel":
        steps = [e for e in events if e["type"] == "step"]
        assert [e["step"] for e in steps] == [1, 2, 3]  # each step logged once, by the main process
        one = [e for e in read_events(runs[method, 1][0]) if e["type"] == "step"]
        for a, b in zip(steps, one, strict=True):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
            assert a["terms"]["eq"] == pytest.approx(b["terms"]["eq"], abs=1e-5)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000002.pt"]
