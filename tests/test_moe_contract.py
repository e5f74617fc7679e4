"""The method contract (``tests/test_contract.py``) on a tiny random model of every mixture-of-experts family:
every registered method fits, its edit's hook form equals its merge form, the export reloads exactly, and
the saved edit loads with ``from editkit.edit.edit import Edit`` alone in a fresh interpreter."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from editkit.export.checkpoint import open_checkpoint
from editkit.export.write import check_export, export_model, logits_of, probe_inputs
from editkit.model.targets import is_expert, target_module
from tests.launch import ROOT, launch_env
from tests.test_contract import FIT_PARAMS, HARM, SAFE
from tests.tiny import MOE_FAMILIES, TRIPLETS, fit_context, tiny_model, tiny_tokenizer

#: the contract's fit parameters, with what a MoE needs: neurons as (layer, expert, index), LoRA on routers
#: and experts too
MOE_FIT_PARAMS = {
    **{k: v for k, v in FIT_PARAMS.items() if k != "dampen"},  # the docs' example is not registered here
    "neurons": {"neurons": [[0, 1, 3], [1, 2, 5], [1, 2, 6]]},
    "scalpel": {**FIT_PARAMS["scalpel"], "targets": ["q", "o", "router", "experts"]},
    "sft": {**FIT_PARAMS["sft"], "targets": ["o", "router", "experts"]},
}


def _data() -> dict:
    triplets = [
        {"id": f"t{i}", "prompt": p, "correct": c, "incorrect": w} for i, (p, c, w) in enumerate(TRIPLETS)
    ]
    return {
        "target_train": triplets,
        "target_test": triplets[:4],
        "general_train": ["The quick brown fox jumps over the lazy dog."] * 4,
        "general_test": ["Paris is the capital of France. Madrid is the capital of Spain."] * 2,
        "harmful": [{"instruction": p} for p in HARM],
        "harmless": [{"instruction": p} for p in SAFE],
        "harmful_test": [{"instruction": p} for p in HARM[:2]],
        "harmless_test": [{"instruction": p} for p in SAFE[:2]],
        "pairs": [{"prompt": "Up is the opposite of?", "response": "Down."}],
    }


def _own_hooks_equal(model, edit, x, merged_logits) -> int:
    """Each op's own hook (routers excepted: their output is a routing decision, not a tensor to correct;
    Edit.apply computes them with merged weights) reproduces the merged model. Returns ops hooked."""
    handles, n = [], 0
    for op in edit.ops:
        mod = target_module(model, op.module)
        if is_expert(mod) or isinstance(mod, torch.nn.Linear):
            handles += op.hook(mod)
            n += 1
    if len(edit.ops) == n:
        try:
            hooked = logits_of(model, x)
        finally:
            for h in handles:
                h.remove()
        assert (hooked - merged_logits).abs().max() <= 1e-4
    else:
        for h in handles:
            h.remove()
    return n


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_every_method_on_a_mixture_of_experts(family, tmp_path):
    from editkit.eval.routing import phase_routing
    from editkit.methods import get_method, method_names

    assert sorted(MOE_FIT_PARAMS) == method_names()
    x = probe_inputs(tiny_tokenizer())
    saved = {}
    for name in method_names():
        method_cls = get_method(name)
        model, tok = tiny_model(family)
        params = method_cls.params_cls(**MOE_FIT_PARAMS[name])
        (tmp_path / name).mkdir()
        ctx = fit_context(model, tok, params, _data(), tmp_path / name)
        method_cls().check(params, ctx.anatomy)
        edit = method_cls().fit(ctx).edit
        assert edit.ops, name
        if name in ("refusal", "neurons", "scalpel", "sft"):  # these reach the experts
            assert any(is_expert(target_module(model, m)) for m in edit.modules), name
        base = logits_of(model, x)
        routing_before = phase_routing(model, tok, ctx.anatomy, ctx.data)
        with edit.applied(model):
            applied = logits_of(model, x)
            routing_after = phase_routing(model, tok, ctx.anatomy, ctx.data)
        assert torch.equal(logits_of(model, x), base)  # removed without a trace
        assert set(routing_before) == {"target", "general"} and routing_after["target"]["tokens"] > 0
        merged = copy.deepcopy(model)
        edit.merge_into(merged)
        merged_logits = logits_of(merged, x)
        assert torch.equal(merged_logits, applied), name
        _own_hooks_equal(model, edit, x, merged_logits)
        control = method_cls().control(ctx, edit)
        assert control is None or control.ops
        export_model(merged, tok, tmp_path / name / "model")
        with edit.applied(model):
            reference = logits_of(model, x)
        checked = check_export(tmp_path / name / "model", reference, x, merged, "same")
        on_disk = len(open_checkpoint(tmp_path / name / "model").entries)  # every tensor, experts included
        assert checked["max_abs_logit_diff"] == 0.0 and checked["tensors_identical"] == on_disk, (
            name,
            checked,
        )
        saved[name] = (
            str(edit.save(tmp_path / name / "edit")),
            len(edit.ops),
            sorted({op.kind for op in edit.ops}),
        )
    code = (
        "import json, sys\n"
        "from editkit.edit.edit import Edit\n"
        f"paths = {json.dumps({k: v[0] for k, v in saved.items()})}\n"
        "out = {k: [len(Edit.load(p).ops), sorted({op.kind for op in Edit.load(p).ops})] for k, p in paths.items()}\n"
        "print(json.dumps(out))\n"
        "print(sorted(m for m in sys.modules if m.startswith('editkit.methods')))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    lines = run.stdout.splitlines()
    assert json.loads(lines[0]) == {k: [v[1], v[2]] for k, v in saved.items()}
    assert lines[1] == "[]"


def test_apply_on_a_mixture_of_experts_records_routing_and_exports_exactly(tmp_path):
    """`editkit apply` end to end on a tiny Qwen2-MoE (shared expert): neurons in two experts and the shared
    expert, streamed export; routing before/after on target and general text in metrics and card."""
    import yaml

    from editkit import apply_recipe
    from tests.tiny import save_tiny

    save_tiny("qwen2_moe", tmp_path / "moe")
    rows = [
        {"id": f"t{i}", "split": "train" if i < 6 else "test", "prompt": p, "correct": c, "incorrect": w}
        for i, (p, c, w) in enumerate(TRIPLETS)
    ]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "name": "moe",
        "model": str(tmp_path / "moe"),
        "method": {"name": "neurons", "neurons": [[0, 1, 3], [1, 2, 5], [1, "shared", 7]]},
        "data": {"target": str(tmp_path / "t.jsonl"), "heldout": []},
        "eval": {"blimp": False, "robustness": False, "max_items": 4, "batch_size": 4, "generations": 0},
        "export": {"streaming": True},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    res = apply_recipe(tmp_path / "r.yaml", runs_root=tmp_path / "runs")
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert set(m["routing"]) == {"base", "edited"}
    for phase in ("base", "edited"):
        assert set(m["routing"][phase]) == {"target", "general"}
        for text in ("target", "general"):
            r = m["routing"][phase][text]
            assert r["layers"] == [0, 1] and r["tokens"] > 0
            assert all(abs(sum(s) - 2.0) <= 1e-5 for s in r["shares"])  # top-2: shares add up to k
    assert m["export"]["streaming"] is True and m["export"]["max_abs_logit_diff"] == 0.0
    assert m["export"]["tensors_identical"] == len(open_checkpoint(res.model_dir).entries)
    assert m["edit"]["info"]["neuron_units"] == [[0, 1, 3], [1, 2, 5], [1, "shared", 7]]
    card = (res.model_dir / "README.md").read_text()
    assert "## Routing" in card and "| target |" in card and "| general |" in card
    assert "each expert's `down_proj` input" in card
