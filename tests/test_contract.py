"""The contracts every edit op and every method keeps, checked for each one registered.

Adding an op or a method without a case here fails ``test_every_op_has_a_case`` /
``test_every_method_has_a_case``: a new kind cannot skip the contract.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from editkit.anatomy import find_anatomy
from editkit.edit import Edit
from editkit.export import logits_of, probe_inputs
from editkit.ops import OPS, LowRank, NormPreservingProjectOut, ProjectOut, ScaleInputs, op_kinds
from tests.launch import ROOT, launch_env
from tests.tiny import tiny_model


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
    """``from editkit.edit import Edit; Edit.load(d)`` is all a user runs (the card says so): every op kind
    must load with nothing else of editkit imported."""
    model, _ = tiny_model("llama")
    edit = _op_case(kind, find_anatomy(model), torch.Generator().manual_seed(2))
    edit.save(tmp_path / "edit")
    code = (
        "import sys\n"
        "from editkit.edit import Edit\n"
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
