"""SCALPEL's representation term (``lambda_repr``): the answer classes' between-class share of the residual
stream, computed exactly and pushed down by the fit."""

from __future__ import annotations

import pytest
import torch

from editkit.methods.scalpel.fit import ScalpelMethod
from editkit.methods.scalpel.representation import between_class_share, prompt_ends, repr_layers
from editkit.run.events import EventLog
from tests.test_scalpel import make_ctx
from tests.tiny import TRIPLETS

#: two answer classes in two frames (the term needs several items per class in a batch: a target with one
#: class per item, like capitals, gives a share of 1 that nothing can lower)
TWO_CLASSES = [
    {
        "id": f"c{i}",
        "prompt": p,
        "correct": " good" if i % 2 else " bad",
        "incorrect": " bad" if i % 2 else " good",
        "frame": "main" if i < 4 else "other",
    }
    for i, (p, _, _) in enumerate(TRIPLETS)
]


def test_between_class_share_by_hand():
    h = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    classes, frames = ["a", "b", "a", "b"], ["f", "f", "g", "g"]
    # frame f centred: [-1, 0], [1, 0]; frame g: [0, -1], [0, 1]; class a mean [-.5, -.5], b [.5, .5]
    # S_B = 2·0.5 + 2·0.5 = 2; S_T = 1 + 1 + 1 + 1 = 4
    assert float(between_class_share(h, classes, frames)) == pytest.approx(0.5)
    # class means that coincide within every frame: nothing to read
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    assert float(between_class_share(same + 0.0, classes, frames)) == 0.0
    assert float(between_class_share(h, ["a"] * 4, frames)) == 0.0  # one class
    # the total is detached: the gradient moves only the class means
    x = h.clone().requires_grad_(True)
    between_class_share(x, classes, frames).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_prompt_ends_and_layers():
    mask = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert prompt_ends(mask).tolist() == [1, 2]
    assert repr_layers(30, [0.25, 0.5]) == [7, 15]
    assert repr_layers(2, [0.0, 0.25, 0.9]) == [1]  # never the embedding output, never past the last layer


def test_the_fit_lowers_the_between_class_share(tmp_path):
    """Every step sees the same batch (all train items): with a large weight the term falls and is reported."""
    common = dict(steps=12, lr=0.01, batch_size=64, val_fraction=0.0, lambda_text=0.0, checkpoint_every=0)
    events = EventLog(tmp_path / "events.jsonl", "t")
    ctx = make_ctx(tmp_path, events=events, lambda_repr=20.0, repr_layer_fracs=[0.5], **common)
    ctx.data["target_train"] = TWO_CLASSES
    ScalpelMethod().fit(ctx)
    events.close()
    import json

    steps = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    reps = [e["terms"]["repr"] for e in steps if e["type"] == "step"]
    assert len(reps) == 12 and reps[0] > 0
    assert reps[-1] < 0.5 * reps[0]
    # without the term it is not reported (the paper's loss alone)
    (tmp_path / "plain").mkdir()
    events = EventLog(tmp_path / "plain" / "events.jsonl", "t")
    ctx = make_ctx(tmp_path / "plain", events=events, **common)
    ctx.data["target_train"] = TWO_CLASSES
    ScalpelMethod().fit(ctx)
    events.close()
    steps = [json.loads(x) for x in (tmp_path / "plain" / "events.jsonl").read_text().splitlines()]
    assert all("repr" not in e["terms"] for e in steps if e["type"] == "step")


def test_a_target_with_about_one_item_per_class_gets_a_warning(tmp_path):
    """Eight triplets with eight different answers (capitals-like) in a batch of 8: the class means are the
    items, so the term would only shrink the residual stream; the fit says so."""
    import json

    events = EventLog(tmp_path / "events.jsonl", "t")
    ctx = make_ctx(tmp_path, events=events, steps=1, batch_size=8, val_fraction=0.0, lambda_repr=1.0)
    ScalpelMethod().fit(ctx)
    events.close()
    logs = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    warned = [e["message"] for e in logs if e["type"] == "log" and e.get("level") == "warning"]
    assert any("holds 1.00 items per answer class" in m for m in warned)
    # the two-class target of the fit test: no warning
    (tmp_path / "two").mkdir()
    events = EventLog(tmp_path / "two" / "events.jsonl", "t")
    ctx = make_ctx(tmp_path / "two", events=events, steps=1, batch_size=8, val_fraction=0.0, lambda_repr=1.0)
    ctx.data["target_train"] = TWO_CLASSES
    ScalpelMethod().fit(ctx)
    events.close()
    logs = [json.loads(x) for x in (tmp_path / "two" / "events.jsonl").read_text().splitlines()]
    assert not [e for e in logs if e["type"] == "log" and e.get("level") == "warning"]
