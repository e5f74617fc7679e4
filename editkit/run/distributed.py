"""Split editkit's heavy loops across processes with accelerate, and gather the results in order.

Three kinds of work parallelise well, and the methods split them like this:

* per-item work (refusal prompts' activations, neuron attributions, knockout trials, generations):
  :func:`gather_shares` calls a function once per process on its contiguous share and gathers the results
  in order (per-prompt rows, not means, where a later step such as winsorisation needs them all);
* independent evaluations one at a time (refusal's candidate layers): :func:`map_across_processes`;
* gradient fitting (``train_lora`` for scalpel/sft): the processes split each step's micro-batches and
  :func:`sum_gradients` adds their gradients before the optimizer step.

Run under ``accelerate launch`` (or ``torchrun``); in a plain single process every helper degrades to the
ordinary loop without creating any process group.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

_ACCELERATOR = None


def launched_distributed() -> bool:
    """True when started by ``accelerate launch`` / ``torchrun`` with more than one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size() > 1
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """This process's global rank as the launcher set it (``RANK``; 0 without a launcher), read without
    creating a process group (the CLI decides from it who prints)."""
    return int(os.environ.get("RANK", "0"))


def get_accelerator():
    """The process-wide ``Accelerator`` (CPU + gloo when there is no GPU), created on first use."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        _ACCELERATOR = Accelerator(cpu=not torch.cuda.is_available())
    return _ACCELERATOR


def _acc(accelerator):
    if accelerator is not None:
        return accelerator
    return get_accelerator() if launched_distributed() else None


def is_main_process(accelerator=None) -> bool:
    """Only the main process writes run directories, exports and events."""
    acc = _acc(accelerator)
    return True if acc is None else bool(acc.is_main_process)


def map_across_processes(fn: Callable[[T], R], items: Iterable[T], accelerator=None) -> list[R]:
    """``[fn(x) for x in items]``, the items split between processes, results gathered in input order.

    Every process gets the full list back. Results must be picklable (tensors: move them to CPU).
    """
    items = list(items)
    acc = _acc(accelerator)
    if acc is None or acc.num_processes == 1:
        return [fn(x) for x in items]
    from accelerate.utils import gather_object

    with acc.split_between_processes(list(enumerate(items))) as mine:
        local = [(i, fn(x)) for i, x in mine]
    gathered = sorted(gather_object(local), key=lambda t: t[0])
    if [i for i, _ in gathered] != list(range(len(items))):
        raise RuntimeError(f"gathered {len(gathered)} results for {len(items)} items")
    return [r for _, r in gathered]


def sum_across_processes(tensor: torch.Tensor, accelerator=None) -> torch.Tensor:
    """Element-wise sum over processes (a no-op in a single process)."""
    acc = _acc(accelerator)
    if acc is None or acc.num_processes == 1:
        return tensor
    from accelerate.utils import reduce

    return reduce(tensor.to(acc.device), reduction="sum").to(tensor.device)


def mean_across_processes(tensor_sum: torch.Tensor, count: int | float, accelerator=None) -> torch.Tensor:
    """Global mean from per-process sums and counts (exact for uneven splits, unlike a mean of means)."""
    total = sum_across_processes(tensor_sum, accelerator)
    n = sum_across_processes(torch.tensor(float(count), dtype=torch.float64), accelerator)
    if float(n) == 0:
        raise ValueError("mean over zero items")
    return total / n.to(total.dtype)


def local_share(items: Sequence[T], accelerator=None) -> list[T]:
    """This process's contiguous slice of ``items`` (all of them in a single process)."""
    acc = _acc(accelerator)
    if acc is None or acc.num_processes == 1:
        return list(items)
    with acc.split_between_processes(list(items)) as mine:
        return list(mine)


def rank_and_world(accelerator=None) -> tuple[int, int]:
    """(this process's index, number of processes); (0, 1) in a plain single process."""
    acc = _acc(accelerator)
    return (0, 1) if acc is None else (int(acc.process_index), int(acc.num_processes))


def broadcast_from_main(obj: T, accelerator=None) -> T:
    """The main process's ``obj`` on every process (e.g. the run directory it chose)."""
    acc = _acc(accelerator)
    if acc is None or acc.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def wait_for_everyone(accelerator=None) -> None:
    """A barrier (a no-op in a single process)."""
    acc = _acc(accelerator)
    if acc is not None and acc.num_processes > 1:
        acc.wait_for_everyone()


def gather_shares(fn: Callable[[list[T]], Any], items: Sequence[T], accelerator=None) -> list[Any]:
    """Each process calls ``fn`` once on its contiguous share of ``items``; every process gets the results
    of all shares, in process (= item) order. Shares that came out empty are skipped.

    The tool for batched work that wants one call per process (a batch of knockout masks, a slice of
    prompts whose activations are gathered row by row): ``torch.cat(gather_shares(f, prompts))``.
    """
    items = list(items)
    acc = _acc(accelerator)
    if acc is None or acc.num_processes == 1:
        return [fn(items)] if items else []
    from accelerate.utils import gather_object

    mine = local_share(items, acc)
    local = [(acc.process_index, fn(mine) if mine else None)]
    gathered = sorted(gather_object(local), key=lambda t: t[0])
    return [r for _, r in gathered if r is not None]


def sum_objects(values: dict[str, float], accelerator=None) -> dict[str, float]:
    """Key-wise sum of small float dicts over processes (keys missing on a process count as 0)."""
    acc = _acc(accelerator)
    if acc is None or acc.num_processes == 1:
        return dict(values)
    from accelerate.utils import gather_object

    out: dict[str, float] = {}
    for d in gather_object([dict(values)]):
        for k, v in d.items():
            out[k] = out.get(k, 0.0) + float(v)
    return out


def sum_gradients(params: Sequence[torch.Tensor], accelerator=None) -> None:
    """All-reduce (sum) the gradients of ``params`` in place; a missing gradient counts as zeros.

    Used when processes split the micro-batches of one optimizer step: each holds the sum of its own
    micro-batches' (already 1/grad_accum-scaled) gradients, so the sum over processes is the gradient a
    single process would have accumulated over all of them.
    """
    acc = _acc(accelerator)
    if acc is None or acc.num_processes == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = sum_across_processes(torch.cat([p.grad.reshape(-1) for p in params]), acc)  # one all-reduce
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n
