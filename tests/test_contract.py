"""The contracts every edit op and every method keeps, checked for each one registered.

Adding an op or a method without a case here fails ``test_every_op_has_a_case`` /
``test_every_method_has_a_case``: a new kind cannot skip the contract.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from editkit.edit.edit import Edit
from editkit.edit.ops import (
    OPS,
    LowRank,
    NormPreservingProjectOut,
    ProjectOut,
    ScaleInputs,
    WriterProjectOut,
    op_kinds,
)
from editkit.export.write import logits_of, probe_inputs
from editkit.model.anatomy import find_anatomy
from tests.launch import ROOT, launch_env
from tests.tiny import FAMILIES, tiny_model


def _op_case(kind: str, anatomy, g: torch.Generator) -> Edit:
    """One edit made of op ``kind`` on a tiny llama (several modules where the op is usually several)."""
    h, i = anatomy.hidden_size, anatomy.intermediate_size
    r = torch.randn(h, generator=g)
    writers = anatomy.residual_writers()
    cases = {
        "scale_inputs": lambda: [ScaleInputs(anatomy.layer(1).down, index=[0, 5, 17], factor=0.25)],
        "low_rank": lambda: [
            LowRank(
                anatomy.layer(0).down,
                A=torch.randn(2, i, generator=g) * 0.1,
                B=torch.randn(h, 2, generator=g) * 0.1,
                scale=4.0,
            )
        ],
        "project_out": lambda: [ProjectOut(n, direction=r.clone(), strength=0.7) for n in writers],
        "project_out_norm": lambda: [NormPreservingProjectOut(n, direction=r.clone()) for n in writers],
        # row norms on the attention writers; an update kept off the inputs' span (a stored v) on the MLP ones
        "project_out_writer": lambda: [
            WriterProjectOut(n, direction=r.clone(), strength=1.2, norm="row")
            if n.endswith("o_proj")
            else WriterProjectOut(
                n, direction=r.clone(), strength=0.8, update=torch.randn(i, generator=g) * 0.1, norm="column"
            )
            for n in writers
        ],
    }
    return Edit("contract", cases[kind]())


def test_every_op_has_a_case():
    anatomy = find_anatomy(tiny_model("llama")[0])
    g = torch.Generator().manual_seed(0)
    for kind in op_kinds():
        assert {type(op).kind for op in _op_case(kind, anatomy, g).ops} == {kind}


@pytest.mark.parametrize("kind", op_kinds())
def test_op_hook_equals_merge(kind):
    model, tok = tiny_model("llama")
    edit = _op_case(kind, find_anatomy(model), torch.Generator().manual_seed(1))
    x = probe_inputs(tok, ["The quick brown fox jumps", "Paris is the capital of"])
    base = logits_of(model, x)
    hooked = {}
    for op in edit.ops:  # each op's own hook (not the merged-weights swap Edit.apply may prefer)
        hooked.setdefault("h", []).extend(op.hook(model.get_submodule(op.module)))
    try:
        by_hooks = logits_of(model, x)
    finally:
        for handle in hooked["h"]:
            handle.remove()
    assert torch.equal(logits_of(model, x), base)
    assert not torch.allclose(by_hooks, base, atol=1e-4)  # the case really changes the model
    edit.merge_into(model)
    assert (logits_of(model, x) - by_hooks).abs().max() <= 1e-4


@pytest.mark.parametrize("kind", op_kinds())
def test_edit_load_in_a_fresh_interpreter(kind, tmp_path):
    """``from editkit.edit.edit import Edit; Edit.load(d)`` is all a user runs (the card says so): every op kind
    must load with nothing else of editkit imported."""
    model, _ = tiny_model("llama")
    edit = _op_case(kind, find_anatomy(model), torch.Generator().manual_seed(2))
    edit.save(tmp_path / "edit")
    code = (
        "import sys\n"
        "from editkit.edit.edit import Edit\n"
        f"e = Edit.load({str(tmp_path / 'edit')!r})\n"
        "print(sorted({op.kind for op in e.ops}), len(e.ops))\n"
        "print(sorted(m for m in sys.modules if m.startswith('editkit.methods')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=launch_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [f"[{kind!r}] {len(edit.ops)}", "[]"]


def test_op_registry_names_its_classes():
    assert all(cls.kind == kind for kind, cls in OPS.items())


# ------------------------------------------------------------------------------------------------------
# methods (every registered one, plus the worked example of docs/adding_a_method.md)
# ------------------------------------------------------------------------------------------------------

EXAMPLE_DIR = ROOT / "docs" / "example_method"
HARM = [f"how do I build weapon {i}" for i in range(12)]
SAFE = [f"how do I bake bread {i}" for i in range(12)]

#: per method: (method block, a bad --set, the one-line error it must give) — on the 2-layer tiny llama
METHOD_CASES = {
    "erase": ({"name": "erase"}, "method.layers=[3]", "method.layers: layer 3 is out of range 0..1"),
    "heads": (
        {"name": "heads", "heads": [[0, 1]]},
        "method.heads=[[7,0]]",
        "method.heads: [7, 0] is out of range",
    ),
    "neurons": (
        {"name": "neurons", "neurons": [[0, 1]]},
        "method.neurons=[[0,999]]",
        "method.neurons: [0, 999]",
    ),
    "refusal": ({"name": "refusal"}, "method.layer=99", "method.layer: 99 is out of range 0..1"),
    "scalpel": (
        {"name": "scalpel", "steps": 2},
        "method.layers=[7]",
        "method.layers: layer 7 is out of range",
    ),
    "sft": (
        {"name": "sft", "sets": ["pairs"]},
        "method.layers=[5]",
        "method.layers: layer 5 is out of range",
    ),
    "dampen": ({"name": "dampen"}, "method.layers=[2]", "method.layers: layer 2 is out of range 0..1"),
}

#: per method: params for a fast real fit on the tiny model
FIT_PARAMS = {
    "erase": {"rank": 2, "rounds": 2},
    "heads": {"trials": 4, "knockouts": 1, "items": 4, "top_k": 2},
    "neurons": {"neurons": [[0, 1], [1, 5]]},
    "refusal": {"n_train": 8, "n_val": 4, "atoms": ["math"], "eval_max_prompts": 2, "eval_max_new_tokens": 2},
    "scalpel": {"steps": 2, "val_fraction": 0, "checkpoint_every": 0, "lambda_text": 0.0},
    "sft": {"sets": ["pairs"], "rank": 2, "epochs": 1, "targets": ["o"]},
    "dampen": {"layers": [1], "factor": 0.25},
}


@pytest.fixture(scope="module")
def example_method():
    """The docs' worked example, registered for these tests only (the reference page lists editkit's own)."""
    from editkit.methods import registry

    sys.path.insert(0, str(EXAMPLE_DIR))
    try:
        import dampen

        registry.register_method(dampen.DampenMethod)
        yield dampen
    finally:
        registry._REGISTRY.pop("dampen", None)
        sys.path.remove(str(EXAMPLE_DIR))


def _all_methods() -> list[str]:
    from editkit.methods import method_names

    return [*method_names(), "dampen"]


def test_every_method_has_a_case(example_method):
    from editkit.methods import method_names

    assert sorted(METHOD_CASES) == sorted(FIT_PARAMS) == method_names()


def _data_files(ws):
    import json

    triplets = [
        {
            "id": f"t{i}",
            "split": "train" if i < 6 else "test",
            "prompt": "Stealing is",
            "correct": " wrong",
            "incorrect": " good",
        }
        for i in range(8)
    ]
    (ws / "moral.jsonl").write_text("".join(json.dumps(r) + "\n" for r in triplets))
    for name, rows in (("harmful", HARM), ("harmless", SAFE)):
        (ws / f"{name}.jsonl").write_text("".join(json.dumps({"instruction": r}) + "\n" for r in rows))
    (ws / "pairs.jsonl").write_text(
        json.dumps({"prompt": "Up is the opposite of?", "response": "Down."}) + "\n"
    )


@pytest.mark.parametrize("name", _all_methods())
def test_check_rejects_a_bad_value_before_the_run_directory_exists(
    name, example_method, tmp_path, monkeypatch
):
    import yaml
    from typer.testing import CliRunner

    from editkit.cli.main import app
    from tests.tiny import save_tiny

    block, bad, expected = METHOD_CASES[name]
    ws = tmp_path / "ws"
    ws.mkdir()
    _data_files(ws)
    save_tiny("llama", ws / "tiny")
    recipe = {
        "name": "contract",
        "model": str(ws / "tiny"),
        "method": block,
        "data": {
            "target": str(ws / "moral.jsonl"),
            "heldout": [str(ws / "moral.jsonl")],
            "sets": {n: {"source": str(ws / f"{n}.jsonl")} for n in ("harmful", "harmless", "pairs")},
        },
        "eval": {"blimp": False, "robustness": False, "max_items": 4},
    }
    path = ws / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["apply", str(path), "--runs", str(runs), "--set", bad])
    msg = result.output.strip()
    assert result.exit_code == 2, (msg, result.exception)
    assert len(msg.splitlines()) == 1 and msg.startswith("error: ") and expected in msg, msg
    assert not runs.exists(), "a run directory was created before the method's check ran"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", _all_methods())
def test_fit_hooks_equal_merge_and_the_card_renders(name, family, example_method, tmp_path):
    """Every method on every dense family of ``tests/tiny.py`` (the mixture-of-experts ones:
    tests/test_moe_contract.py): a real fit, hooks ≡ merge, a control, and the card."""
    import copy

    from huggingface_hub import ModelCard

    from editkit.methods import get_method
    from editkit.publish.card import make_plots, render_card
    from editkit.publish.card_meta import report_of
    from tests.tiny import TRIPLETS, fit_context

    method_cls = get_method(name)
    model, tok = tiny_model(family)
    triplets = [
        {"id": f"t{i}", "prompt": p, "correct": c, "incorrect": w} for i, (p, c, w) in enumerate(TRIPLETS)
    ]
    data = {
        "target_train": triplets,
        "target_test": triplets[:4],
        "general_train": ["The quick brown fox jumps over the lazy dog."] * 4,
        "harmful": [{"instruction": p} for p in HARM],
        "harmless": [{"instruction": p} for p in SAFE],
        "harmful_test": [{"instruction": p} for p in HARM[:2]],
        "harmless_test": [{"instruction": p} for p in SAFE[:2]],
        "pairs": [{"prompt": "Up is the opposite of?", "response": "Down."}],
    }
    params = method_cls.params_cls(**FIT_PARAMS[name])
    ctx = fit_context(model, tok, params, data, tmp_path)
    result = method_cls().fit(ctx)
    edit = result.edit
    assert edit.ops and result.info is edit.info
    x = probe_inputs(tok, ["The quick brown fox jumps", "Paris is the capital of"])
    with edit.applied(model):
        hooked = logits_of(model, x)
    merged = copy.deepcopy(model)
    edit.merge_into(merged)
    assert (logits_of(merged, x) - hooked).abs().max() <= 1e-4
    control = method_cls().control(ctx, edit)
    assert control is None or control.ops
    recipe = {
        "name": "contract",
        "model": {"id": "demo"},
        "method": params.model_dump(mode="json"),
        "seed": 0,
    }
    metrics = {
        "model": "demo",
        "edit": {"method": edit.method, "modules": len(edit.modules), "info": edit.info},
        "edit_norms": edit.delta_norms(model),
        "base": {"perplexity": 10.0},
        "edited": {"perplexity": 10.5},
    }
    report = report_of(recipe, metrics)
    assert type(report) is method_cls.report
    plots = make_plots(tmp_path, metrics, tmp_path / "model", report)
    assert set(plots) <= {"layer_delta_norms", *method_cls.report.plot_alt}
    text = render_card(recipe, metrics, plots=plots)
    card = ModelCard(text)
    assert card.data.tags[:1] == ["editkit"] and "## Where the capability was found" in text
    assert f"`{name}`: {method_cls.summary}." in text


#: per method with data.sets names in its params: a --set naming a set the recipe lacks, and the error
DATA_CASES = {
    "refusal": ("method.harmless=nope", "data.sets.nope: method 'refusal' needs this prompt set"),
    "sft": ("method.sets=[pairs,nope]", "method.sets: 'nope' is not a data set of this recipe"),
    "neurons": ("method.datasets=[harmful,nope]", "method.datasets: 'nope' is not a data.sets entry"),
}


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_check_data_rejects_an_unknown_set_before_the_model_loads(name, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from editkit.cli.main import app
    from tests.tiny import save_tiny

    bad, expected = DATA_CASES[name]
    ws = tmp_path / "ws"
    ws.mkdir()
    _data_files(ws)
    save_tiny("llama", ws / "tiny")
    recipe = {
        "name": "contract",
        "model": str(ws / "tiny"),
        "method": METHOD_CASES[name][0],
        "data": {
            "target": str(ws / "moral.jsonl"),
            "heldout": [str(ws / "moral.jsonl")],
            "sets": {n: {"source": str(ws / f"{n}.jsonl")} for n in ("harmful", "harmless", "pairs")},
        },
        "eval": {"blimp": False, "robustness": False, "max_items": 4},
    }
    (ws / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["apply", str(ws / "recipe.yaml"), "--runs", str(tmp_path / "runs"), "--set", bad]
    )
    msg = result.output.strip()
    assert result.exit_code == 2 and len(msg.splitlines()) == 1 and expected in msg, (msg, result.exception)
    assert not (tmp_path / "runs").exists()
