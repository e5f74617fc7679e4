"""Default batch sizes from the device and its free memory (editkit.model.sizing)."""

from __future__ import annotations

import pytest

from editkit.model.sizing import (
    CPU_EVAL_BATCH,
    CPU_HEAD_BATCH_ROWS,
    EVAL_BATCH_CAP,
    HEAD_ROWS_CAP,
    Shape,
    eval_batch_size,
    head_batch_rows,
    row_bytes,
    rows_that_fit,
)

GiB = 1 << 30
LLAMA_1B = Shape(hidden=2048, intermediate=8192, vocab=128256)
LLAMA_8B = Shape(hidden=4096, intermediate=14336, vocab=128256)


def test_cpu_keeps_the_measured_defaults_whatever_the_memory():
    for free in (None, 1, 500 * GiB):
        assert head_batch_rows("cpu", free, LLAMA_8B, tokens=13, logit_positions=4, rows=64) == 128
        assert eval_batch_size("cpu", free, LLAMA_8B) == 16
        assert eval_batch_size("cpu", free, LLAMA_8B, cpu_default=32) == 32
    assert (CPU_HEAD_BATCH_ROWS, CPU_EVAL_BATCH) == (128, 16)


def test_unknown_free_memory_falls_back_to_the_cpu_defaults():
    assert head_batch_rows("mps", None, LLAMA_1B, 13, 4, 64) == CPU_HEAD_BATCH_ROWS
    assert eval_batch_size("cuda", None, LLAMA_1B) == CPU_EVAL_BATCH


def test_a_big_free_gpu_gets_the_cap_in_whole_masks():
    # an H100 with an 8B model loaded: ~60 GiB free; 32 items x 2 answers = 64 rows per mask
    rows = head_batch_rows("cuda", 60 * GiB, LLAMA_8B, tokens=13, logit_positions=4, rows=64)
    assert rows == HEAD_ROWS_CAP == 2048 and rows % 64 == 0
    assert eval_batch_size("cuda", 60 * GiB, LLAMA_1B) == EVAL_BATCH_CAP
    # rows that do not divide the cap: rounded down to whole masks
    assert head_batch_rows("cuda", 60 * GiB, LLAMA_1B, 13, 4, rows=48) == 2016


def test_less_memory_gives_smaller_batches_but_never_below_one_mask_or_row():
    sizes = [head_batch_rows("cuda", f * GiB, LLAMA_8B, 40, 30, 64) for f in (0.01, 1, 4, 16, 64)]
    assert sizes == sorted(sizes)
    assert sizes[0] == 64  # one mask, even when nothing fits: the caller needs at least one
    assert all(s % 64 == 0 for s in sizes)
    evals = [eval_batch_size("cuda", f * GiB, LLAMA_8B) for f in (0.01, 1, 4, 16, 64)]
    assert evals == sorted(evals) and evals[0] == 1 and evals[-1] == EVAL_BATCH_CAP
    # the planned batch stays inside the memory share it was given
    free = 4 * GiB
    n = eval_batch_size("cuda", free, LLAMA_8B)
    assert 1 < n < EVAL_BATCH_CAP
    assert n * row_bytes(LLAMA_8B, 256, 256) <= 0.5 * free < (n + 1) * row_bytes(LLAMA_8B, 256, 256)


def test_row_bytes_grows_with_tokens_logits_and_width():
    base = row_bytes(LLAMA_1B, 16, 4)
    assert row_bytes(LLAMA_1B, 32, 4) > base
    assert row_bytes(LLAMA_1B, 16, 8) > base
    assert row_bytes(LLAMA_8B, 16, 4) > base
    assert row_bytes(Shape(2048, 8192, 128256, bytes_per_value=4), 16, 4) > base


@pytest.mark.parametrize(
    "free,per_row,cap,want", [(100, 10, 8, 5), (100, 10, 3, 3), (5, 10, 8, 1), (0, 1, 8, 1)]
)
def test_rows_that_fit(free, per_row, cap, want):
    assert rows_that_fit(free, per_row, cap) == want


def test_model_wrappers_on_a_cpu_model_keep_the_cpu_defaults():
    from editkit.methods.heads.fit import batch_rows_for
    from editkit.methods.heads.params import HeadsParams
    from editkit.model.sizing import model_eval_batch_size, shape_of
    from tests.tiny import tiny_model

    model, tok = tiny_model("llama")
    assert shape_of(model) == Shape(64, 128, len(tok), bytes_per_value=4)
    assert model_eval_batch_size(model) == 16
    assert batch_rows_for(model, HeadsParams()) == 128
    assert batch_rows_for(model, HeadsParams(batch_rows=7)) == 7
