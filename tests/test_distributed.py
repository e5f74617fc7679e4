"""Two real CPU processes (gloo, launched with `accelerate launch`) give the single-process results.

The same file is the worker: ``accelerate launch ... tests/test_distributed.py OUT`` runs ``_worker``.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from editkit.methods.heads.fit import head_mask_edit
from editkit.run.distributed import get_accelerator, local_share, map_across_processes, mean_across_processes
from tests.launch import accelerate_launch, launch_env

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The quick brown fox jumps over",
    "Paris is the capital of",
    "Two plus three is",
    "def add(a, b):",
    "Hot is the opposite of",
    "In 1969 the first people walked",
    "Helping a lost child is",
]  # 7: an uneven split (4 + 3)
TRIALS = [[(0, 0)], [(0, 1), (1, 2)], [(1, 3)], [(0, 2), (1, 0)], [(1, 1)]]


def _score(model) -> float:
    ids = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 8]])
    return -float(model(input_ids=ids, labels=ids).loss)


def _lora_setup(per_process_batch: int):
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader, TensorDataset

    from tests.tiny import tiny_model

    model, _ = tiny_model("llama")
    torch.manual_seed(0)
    model = get_peft_model(
        model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    ids = torch.randint(0, 300, (8, 12), generator=torch.Generator().manual_seed(3))
    loader = DataLoader(TensorDataset(ids), batch_size=per_process_batch, shuffle=False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    return model, opt, loader


def _lm_loss(model, batch):
    return model(input_ids=batch[0], labels=batch[0]).loss


# ------------------------------------------------------------------------------------------------------
# one-call helpers built on editkit.run.distributed, checked here against a single process
# ------------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def last_token_residual_means(
    model, tokenizer, prompts: Sequence[str], batch_size: int = 8, accelerator=None
) -> torch.Tensor:
    """Mean residual stream at each prompt's last token, per layer: [n_layers + 1, hidden], float64.

    Row 0 is the embedding output, row l the output of layer l (``output_hidden_states``). Sums are
    accumulated in float64 per process, then added across processes — the refusal direction is the
    difference of two of these means.
    """
    mine = local_share(prompts, accelerator)
    dev = next(model.parameters()).device
    total: torch.Tensor | None = None
    for i in range(0, len(mine), batch_size):
        enc = tokenizer(list(mine[i : i + batch_size]), return_tensors="pt", padding=True)
        mask = enc["attention_mask"].to(dev)
        out = model(input_ids=enc["input_ids"].to(dev), attention_mask=mask, output_hidden_states=True)
        pos = torch.arange(mask.shape[1], device=dev)
        last = (mask * pos).argmax(dim=1)  # last real token, whichever side the padding is on
        rows = torch.arange(mask.shape[0], device=dev)
        h = torch.stack([hs[rows, last] for hs in out.hidden_states], dim=1).to(torch.float64)
        s = h.sum(dim=0).cpu()
        total = s if total is None else total + s
    if total is None:  # this process got no prompts: contribute zeros of the right shape
        n_states = model.config.num_hidden_layers + 1
        total = torch.zeros(n_states, model.config.hidden_size, dtype=torch.float64)
    return mean_across_processes(total, len(mine), accelerator)


def knockout_trial_scores(
    model,
    anatomy,
    trials: Sequence[Sequence[tuple[int, int]]],
    score: Callable[[Any], float],
    factor: float = 0.0,
    accelerator=None,
) -> list[float]:
    """Score the model with each trial's heads knocked out; trials split across processes.

    ``trials[i]`` lists (layer, head) pairs; ``score(model)`` returns the task score (e.g. mean gold
    log-prob on a fixed subset). The knockout is the exact edit the heads method exports.
    """

    def run(heads):
        edit = head_mask_edit(anatomy, [tuple(h) for h in heads], factor)
        with torch.no_grad(), edit.applied(model):
            return float(score(model))

    return map_across_processes(run, trials, accelerator)


# ------------------------------------------------------------------------------------------------------
# data-parallel fitting
# ------------------------------------------------------------------------------------------------------


def fit_data_parallel(
    model,
    optimizer,
    dataloader,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    epochs: int = 1,
    max_grad_norm: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
    accelerator=None,
):
    """Train with every process on its share of each batch; gradients averaged by accelerate.

    ``loss_fn(model, batch)`` returns the mean loss of the batch. Returns ``(unwrapped model, losses)``
    where ``losses[i]`` is step i's loss averaged over processes. With N processes and a per-process batch
    of b, a step equals a single-process step on the N·b examples (for a mean loss).
    """
    acc = accelerator or get_accelerator()
    model, optimizer, dataloader = acc.prepare(model, optimizer, dataloader)
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        for batch in dataloader:
            loss = loss_fn(model, batch)
            acc.backward(loss)
            if max_grad_norm is not None:
                acc.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            step_loss = float(acc.reduce(loss.detach(), reduction="mean"))
            losses.append(step_loss)
            if on_step is not None and acc.is_main_process:
                on_step(len(losses) - 1, step_loss)
    model.eval()
    return acc.unwrap_model(model), losses


def _compute(per_process_batch: int, accelerator=None) -> dict:
    """Everything the test compares, computed with the editkit.run.distributed helpers."""
    from editkit.model.anatomy import find_anatomy
    from editkit.run.distributed import map_across_processes, mean_across_processes
    from tests.tiny import tiny_model

    model, tok = tiny_model("llama")
    out = {
        "means": last_token_residual_means(model, tok, PROMPTS, batch_size=1, accelerator=accelerator),
        "scores": knockout_trial_scores(model, find_anatomy(model), TRIALS, _score, accelerator=accelerator),
        "squares": map_across_processes(lambda x: x * x, range(5), accelerator=accelerator),
    }
    rank = accelerator.process_index if accelerator is not None else 0
    n_local = 3 if rank == 0 else 2  # deliberately uneven counts: the mean must weight by count
    total = torch.tensor(float(rank + 1) * n_local, dtype=torch.float64)
    out["mean"] = float(mean_across_processes(total, n_local, accelerator))
    model, opt, loader = _lora_setup(per_process_batch)
    trained, losses = fit_data_parallel(model, opt, loader, _lm_loss, accelerator=accelerator)
    out["lora"] = {k: v.detach().clone() for k, v in trained.named_parameters() if "lora_" in k}
    out["losses"] = losses
    return out


def _worker(out_dir: str) -> None:
    torch.set_num_threads(1)
    from editkit.run.distributed import get_accelerator, launched_distributed

    assert launched_distributed()
    acc = get_accelerator()
    assert acc.num_processes == 2
    res = _compute(per_process_batch=2, accelerator=acc)
    res["world"] = acc.num_processes
    torch.save(res, Path(out_dir) / f"rank{acc.process_index}.pt")


def test_two_processes_equal_one(tmp_path):
    cmd = [*accelerate_launch(2), __file__, str(tmp_path)]
    proc = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt") for i in (0, 1))
    assert r0["world"] == 2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = _compute(per_process_batch=4)  # one process, the whole batch
    finally:
        torch.set_num_threads(threads)

    for r in (r0, r1):  # every process gets the full, ordered results
        assert r["squares"] == [0, 1, 4, 9, 16]
        assert r["scores"] == ref["scores"]  # trials run identically, only elsewhere
        assert torch.allclose(r["means"], ref["means"], rtol=0, atol=1e-12)
        assert r["mean"] == (1 * 3 + 2 * 2) / 5  # Σ sums / Σ counts, not the mean of means (1.5)
        for k, v in ref["lora"].items():
            assert torch.allclose(r["lora"][k], v, rtol=0, atol=1e-6), k
        assert len(r["losses"]) == 2
        assert all(abs(a - b) < 1e-5 for a, b in zip(r["losses"], ref["losses"], strict=True))
    assert ref["means"].shape == (3, 64) and ref["means"].dtype == torch.float64
    assert len(set(ref["scores"])) == len(TRIALS)  # knockouts matter, so equal lists are informative
    init = _lora_setup(4)[0]
    moved = max(float((ref["lora"][k] - p).abs().max()) for k, p in init.named_parameters() if "lora_" in k)
    assert moved > 1e-3  # training really changed the adapters


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _worker(sys.argv[1])
