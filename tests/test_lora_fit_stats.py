"""train_lora reads each step's numbers back one step late, in one copy: the history must still hold exactly
the values ``.item()`` gives, events must come in order, and a non-finite loss must name its own step."""

from __future__ import annotations

import pytest
import torch

from editkit.errors import EditkitError
from editkit.methods.lora_config import TrainConfig
from editkit.methods.lora_fit import train_lora
from editkit.methods.lora_loss import LossOut
from editkit.run.events import NullEventLog


class Recorder(NullEventLog):
    def __init__(self):
        super().__init__()
        self.steps: list[dict] = []

    def emit(self, type, **fields):
        if type == "step":
            self.steps.append(fields)
        return fields


def _toy(nan_at: int | None = None):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, dtype=torch.float32))
    model = torch.nn.Module()
    model.w = w
    seen: list[dict] = []

    def loss_fn(batch) -> LossOut:
        step, micro = batch
        x = torch.linspace(-1, 1, 4) * (step + 1) + micro
        loss = ((model.w * x).sum() - 1.0) ** 2
        if nan_at is not None and step + 1 == nan_at:
            loss = loss * float("nan")
        half = (model.w.detach().to(torch.bfloat16) * 3).sum()  # a bf16 term: exact in the fp64 read-back
        seen.append({"loss": loss.item(), "half": half.item(), "n": 7})
        return LossOut(loss=loss, terms={"half": half, "plain": 0.25}, metrics={"n": 7})

    return model, loss_fn, seen


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_history_is_exactly_what_item_gives_and_events_are_in_order(grad_accum):
    model, loss_fn, seen = _toy()
    events = Recorder()
    cfg = TrainConfig(steps=7, lr=0.05, grad_accum=grad_accum, max_grad_norm=1.0)
    res = train_lora(model, loss_fn, lambda s, m: (s, m), cfg, events=events)
    assert [r["step"] for r in res.history] == list(range(1, 8))
    assert [e["step"] for e in events.steps] == list(range(1, 8))
    for i, rec in enumerate(res.history):
        micro = seen[i * grad_accum : (i + 1) * grad_accum]
        total, half = 0.0, 0.0
        for m in micro:  # the arithmetic the loop always did: float(.item()) / grad_accum, summed in order
            total += m["loss"] / grad_accum
            half += m["half"] / grad_accum
        assert rec["loss"] == total and rec["terms"]["half"] == half
        assert rec["terms"]["plain"] == sum(0.25 / grad_accum for _ in micro)
        assert rec["metrics"]["n"] == sum(7 / grad_accum for _ in micro) and rec["metrics"]["grad_norm"] > 0


def test_a_non_finite_loss_names_its_step_even_when_read_late():
    model, loss_fn, _ = _toy(nan_at=3)
    events = Recorder()
    with pytest.raises(EditkitError, match="diverged at step 3: the loss is nan"):
        train_lora(model, loss_fn, lambda s, m: (s, m), TrainConfig(steps=10, lr=0.05), events=events)
    assert [e["step"] for e in events.steps] == [1, 2]  # step 3 is never recorded
