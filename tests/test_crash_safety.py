"""SIGKILL `editkit export` (streamed and in memory) and `editkit apply` during its export at random points:
the destination is always absent or complete and loadable, a rerun finishes, and the rerun removes the
temporary folders killed exports left (only those: a live export's and foreign folders stay)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from editkit.export.write import clean_stale

EDITKIT = str(Path(sys.executable).with_name("editkit"))
KILLS_EXPORT = 10
KILLS_APPLY = 3


def _small_model(path: Path) -> Path:
    """Bigger than tests/tiny.py (≈10 MB in 1 MB shards) so that a kill can land while shards are written."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tiny import tiny_tokenizer

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=128,
    )
    LlamaForCausalLM(cfg).save_pretrained(path, max_shard_size="1MB")
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from editkit import apply_recipe

    tmp = tmp_path_factory.mktemp("crash")
    model = _small_model(tmp / "base")
    target = tmp / "t.jsonl"
    rows = [
        {"id": str(i), "split": "train" if i < 4 else "test", "prompt": "Up is the opposite of"}
        | {"correct": " down", "incorrect": " up"}
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp / "r.yaml"
    recipe.write_text(
        f"name: crash\nmodel: {model}\nmethod: {{name: heads, heads: [[0, 1], [2, 3]]}}\n"
        f"data: {{target: {target}, heldout: [{target}]}}\n"
        "eval: {blimp: false, robustness: false, control: false, perplexity: false, max_items: 4}\n"
        "export: {max_shard_size: 1MB}\n"
    )
    return apply_recipe(recipe, out=tmp / "run").run_dir


def _reference(run_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted((run_dir / "model").glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _state(dest: Path, ref: dict[str, torch.Tensor]) -> str:
    """'absent' or 'complete' (every tensor equal to the reference, and plain transformers loads it)."""
    if not dest.exists():
        return "absent"
    from transformers import AutoModelForCausalLM

    got = {}
    for f in sorted(dest.glob("*.safetensors")):
        got.update(load_file(f))
    assert got.keys() == ref.keys(), sorted(set(ref) ^ set(got))[:5]
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    AutoModelForCausalLM.from_pretrained(dest, use_safetensors=True)
    assert (dest / "editkit" / "run.json").exists() and (dest / "tokenizer.json").exists()
    return "complete"


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}."))


def _kill_when(proc: subprocess.Popen, ready, delay: float) -> bool:
    """Wait until ``ready()`` (or the process ends), then SIGKILL it after ``delay`` s. True if it was killed."""
    while not ready() and proc.poll() is None:
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def _env() -> dict:
    return dict(os.environ, COLUMNS="200")


def test_sigkill_export_leaves_absent_or_complete_and_a_rerun_cleans_up(run_dir, tmp_path):
    ref = _reference(run_dir)
    dest = tmp_path / "exp"
    rng = random.Random(0)
    mid_write = states = 0
    seen = {"absent": 0, "complete": 0}
    for i in range(KILLS_EXPORT):
        streaming = i % 2 == 0
        if i % 4 < 2:  # half the kills write a new export, half replace a complete one
            shutil.rmtree(dest, ignore_errors=True)
        elif not dest.exists():
            shutil.copytree(run_dir / "model", dest)
        cmd = [EDITKIT, "export", str(run_dir), "--out", str(dest)] + ["--streaming"] * streaming
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def writing(dest=dest):
            return any(n.startswith(f".{dest.name}.tmp-") for n in _leftovers(dest))

        if i % 5 == 4:  # some kills at a random moment from the start (imports, loading, verifying)
            killed = _kill_when(proc, lambda: True, rng.uniform(0.5, 6.0))
        else:  # most while the temporary folder exists: shards being written
            killed = _kill_when(proc, writing, rng.uniform(0.0, 0.05))
        mid_write += killed and writing()
        state = _state(dest, ref)
        seen[state] += 1
        states += 1
    assert states == KILLS_EXPORT and mid_write >= 3 and seen["complete"] >= 3, (mid_write, seen)

    # foreign folders and a live process's folder are not touched by the rerun
    foreign = tmp_path / f".{dest.name}.tmp-notours"
    live = tmp_path / f".{dest.name}.tmp-{os.getpid()}-live"
    foreign.mkdir()
    live.mkdir()
    for streaming in (True, False):
        rerun = subprocess.run(
            [EDITKIT, "export", str(run_dir), "--out", str(dest)] + ["--streaming"] * streaming,
            env=_env(),
            capture_output=True,
            text=True,
        )
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert _state(dest, ref) == "complete"
        assert _leftovers(dest) == sorted([foreign.name, live.name])
    print(f"export kills: {KILLS_EXPORT}, mid-write {mid_write}, states {seen}")


def test_sigkill_apply_during_export_then_resume(run_dir, tmp_path):
    ref = _reference(run_dir)
    recipe = run_dir / "recipe.yaml"
    run = tmp_path / "run"
    rng = random.Random(1)

    def exporting() -> bool:
        ev = run / "events.jsonl"
        return ev.exists() and '"stage": "export"' in ev.read_text().replace(
            '"stage":"export"', '"stage": "export"'
        )

    killed = 0
    for i in range(KILLS_APPLY):
        args = [EDITKIT, "apply", str(recipe), "--out", str(run)] + (["--resume"] if i else [])
        proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed += _kill_when(proc, exporting, rng.uniform(0.0, 0.3))
        assert _state(run / "model", ref) in ("absent", "complete")
    assert killed >= 2
    done = subprocess.run(
        [EDITKIT, "apply", str(recipe), "--out", str(run), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert _state(run / "model", ref) == "complete"
    assert _leftovers(run / "model") == []


def test_clean_stale_only_removes_dead_processes_folders(tmp_path):
    dest = tmp_path / "model"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".model.tmp-{dead.pid}-abc").mkdir()
    (tmp_path / f".model.tmp-{os.getpid()}-mine").mkdir()
    (tmp_path / ".model.tmp-xyz").mkdir()  # not named by editkit's scheme
    (tmp_path / ".other.tmp-1-abc").mkdir()
    (tmp_path / ".model.old").mkdir()  # a crash between the two renames: the last complete export
    assert clean_stale(dest) == [tmp_path / f".model.tmp-{dead.pid}-abc"]
    assert dest.is_dir() and not (tmp_path / ".model.old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".model.tmp-{os.getpid()}-mine", ".model.tmp-xyz", ".other.tmp-1-abc", "model"]
    )
