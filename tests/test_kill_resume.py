"""SIGKILL `editkit apply` during the scalpel fit at random steps, again and again, and `--resume` each time:
the run that finally finishes has the metrics, edit norms and edit tensors of an uninterrupted run, bit for bit
(the fit is deterministic: batches are a function of the step, and a checkpoint carries the adapter, the
optimizer, the RNG states and the history). A checkpoint damaged on disk is skipped for the one before it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from editkit import apply_recipe
from editkit.methods.lora_checkpoint import latest_checkpoint
from editkit.run.events import read_events
from tests.tiny import TRIPLETS, save_tiny, tiny_model

EDITKIT = str(Path(sys.executable).with_name("editkit"))
KILLS = 6
STEPS = 48
CHECKPOINT_EVERY = 4

RECIPE = """\
name: kill-resume
model: {model}
method:
  name: scalpel
  steps: {steps}
  lr: 0.01
  batch_size: 4
  dropout: 0.1            # LoRA dropout: a resume must redraw the uninterrupted run's masks
  val_fraction: 0.25
  eval_every: 5
  early_stop_gap: null
  checkpoint_every: {every}
data:
  target: {target}
  heldout: []
  general: {{source: builtin, limit: 4}}
eval:
  blimp: false
  robustness: false
  control: false
  perplexity: false
  checks: {{relearn: {{steps: 2, examples: 4}}, specificity: false, quantised: false}}
  generations: 0
  max_items: 4
  batch_size: 8
  drift_prompts: 2
seed: 3
"""

#: what legitimately differs between the reference and the killed-and-resumed run
TIMING_KEYS = {"fit_seconds", "total_seconds", "seconds"}  # wall-clock seconds (checks.<name>.seconds too)
RESUME_KEYS = {"resumed_from"}  # edit.info: None in the reference, the checkpoint step when resumed
#: where the base phase came from: the first run stored it, the later ones read it (the numbers are compared)
CACHE_KEYS = {"base_phase_cache"}


def _env() -> dict:
    # one thread: the tiny model steps ~10x faster on shared cores, and both runs compute alike
    return dict(os.environ, COLUMNS="200", OMP_NUM_THREADS="1")


def _recipe(tmp: Path) -> Path:
    model = save_tiny("llama", tmp / "model")
    rows = [
        {"id": f"t{i}", "prompt": p, "correct": c, "incorrect": w, "split": "train" if i < 6 else "test"}
        for i, (p, c, w) in enumerate(TRIPLETS)
    ]
    target = tmp / "target.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=model, target=target, steps=STEPS, every=CHECKPOINT_EVERY))
    return recipe


def _apply(recipe: Path, out: Path, resume: bool, log: Path) -> subprocess.Popen:
    cmd = [EDITKIT, "apply", str(recipe), "--out", str(out)] + ["--resume"] * resume
    with open(log, "wb") as fh:  # a file, not a pipe: a full pipe would stall the run
        return subprocess.Popen(
            cmd,
            env=_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the SIGKILL takes everything it started
        )


def _events_since(path: Path, offset: int) -> list[dict]:
    """Complete events appended to ``path`` after byte ``offset`` (this attempt's events)."""
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        fh.seek(offset)
        tail = fh.read().decode("utf-8", errors="replace")
    out = []
    for line in tail.splitlines(keepends=True):
        if line.endswith("\n"):
            out.append(json.loads(line))
    return out


def _fit_step(events: list[dict]) -> int:
    return max((e["step"] for e in events if e["type"] == "step" and e.get("stage") == "fit"), default=0)


def _strip(metrics: dict, drop: set[str]) -> dict:
    if isinstance(metrics, dict):
        return {k: _strip(v, drop) for k, v in metrics.items() if k not in drop}
    if isinstance(metrics, list):
        return [_strip(v, drop) for v in metrics]
    return metrics


def _writing(run: Path, since_ns: int) -> bool:
    """Whether a checkpoint's temporary file written after ``since_ns`` is there (a write under way, or
    one a kill cut short)."""
    try:
        return any(
            e.name.startswith(".step-") and e.name.endswith(".pt.tmp") and e.stat().st_mtime_ns >= since_ns
            for e in os.scandir(run / "checkpoints")
        )
    except FileNotFoundError:  # no checkpoint directory yet, or the file was renamed meanwhile
        return False


def _checkpoint_step(run: Path) -> int | None:
    found = latest_checkpoint(run / "checkpoints")
    return int(found.stem.split("-")[1]) if found else None


def test_sigkill_during_fit_then_resume_is_bit_identical(tmp_path):
    t_start = time.time()
    recipe = _recipe(tmp_path)
    ref_dir = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs under OMP_NUM_THREADS=1
    try:
        apply_recipe(recipe, out=ref_dir)  # the uninterrupted reference, in this process
    finally:
        torch.set_num_threads(threads)

    run = tmp_path / "run"
    events = run / "events.jsonl"
    rng = random.Random(7)
    targets = sorted(rng.sample(range(2, STEPS - 2), KILLS))  # distinct random steps, spread over the fit
    kills: list[tuple[int, int]] = []  # (target step, last step the log showed when the kill landed)
    resumed_at: list[int] = []
    torn = 0  # kills that landed while a checkpoint was being written (its .tmp file left behind)
    for i, target in enumerate(targets):
        resume_from = _checkpoint_step(run) if i else None
        start = resume_from or 0
        target = max(target, start + 1)  # (the last kill may have run past this target)
        offset = events.stat().st_size if events.exists() else 0
        t_ns = time.time_ns()
        log = tmp_path / f"attempt-{i}.log"
        proc = _apply(recipe, run, resume=i > 0, log=log)
        while proc.poll() is None and _fit_step(_events_since(events, offset)) < target:
            time.sleep(0.005)
        if i % 2:  # aimed at the next checkpoint write: kill as soon as its temporary file appears
            while proc.poll() is None and not _writing(run, t_ns):
                pass
        else:  # anywhere in the step
            time.sleep(rng.uniform(0.0, 0.06))
        assert proc.poll() is None, f"attempt {i} ended before it was killed: {log.read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        mine = _events_since(events, offset)
        steps = [e["step"] for e in mine if e["type"] == "step" and e.get("stage") == "fit"]
        # the attempt continued right after its checkpoint, one step at a time
        assert steps[: target - start] == list(range(start + 1, target + 1)), (i, start, steps)
        said = [e["message"] for e in mine if e["type"] == "log" and "resumed from" in e["message"]]
        assert said == ([f"resumed from checkpoint at step {resume_from}"] if resume_from else []), said
        assert not any(e["type"] == "run_end" for e in mine)  # SIGKILL: no goodbye in the log
        # every checkpoint under its real name is complete (a kill mid-write leaves at most a .tmp file)
        for ck in (run / "checkpoints").glob("step-*.pt"):
            assert torch.load(ck, weights_only=True)["step"] == int(ck.stem.split("-")[1])
        kills.append((target, _fit_step(mine)))
        torn += _writing(run, t_ns)
        if resume_from:
            resumed_at.append(resume_from)

    # the aimed kills cut a checkpoint write short (what the atomic write is for), at least once
    assert torn >= 1, kills
    last_checkpoint = _checkpoint_step(run)
    assert last_checkpoint is not None
    offset = events.stat().st_size
    done = subprocess.run(
        [EDITKIT, "apply", str(recipe), "--out", str(run), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    final = _events_since(events, offset)
    assert f"resumed from checkpoint at step {last_checkpoint}" in [
        e.get("message") for e in final if e["type"] == "log"
    ]
    assert [e["step"] for e in final if e["type"] == "step"] == list(range(last_checkpoint + 1, STEPS + 1))
    assert [e["status"] for e in read_events(run) if e["type"] == "run_end"] == ["ok"]

    want = json.loads((ref_dir / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    assert got["edit"]["info"]["resumed_from"] == last_checkpoint
    assert want["edit"]["info"]["resumed_from"] is None
    assert got["edit"]["info"]["steps_run"] == STEPS
    # the removal checks ran after the resumed fit and agree with the reference (their wall-clock seconds aside)
    assert {"separation", "probe", "relearn", "verdict"} <= set(got["checks"]), sorted(got["checks"])
    drop = TIMING_KEYS | RESUME_KEYS | CACHE_KEYS
    # the fit-derived numbers first (the clearest failure message), then everything else
    for key in ("edited", "edit_norms"):
        assert got[key] == want[key], key
    assert _strip(got["edit"], drop) == _strip(want["edit"], drop)
    assert _strip(got, drop) == _strip(want, drop)

    a = load_file(ref_dir / "edit" / "tensors.safetensors")
    b = load_file(run / "edit" / "tensors.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert _strip(json.loads((run / "edit" / "edit.json").read_text()), RESUME_KEYS) == _strip(
        json.loads((ref_dir / "edit" / "edit.json").read_text()), RESUME_KEYS
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step-{STEPS:07d}.pt"]
    print(f"kills (target step, last logged step): {kills}; {torn} mid-checkpoint-write; resumed from")
    print(f"{resumed_at} then {last_checkpoint}")
    print(f"wall time {time.time() - t_start:.1f} s")


class _Crash(RuntimeError):
    pass


def test_an_unreadable_checkpoint_is_skipped_for_the_one_before_it(tmp_path):
    """A checkpoint can be damaged after it was written (a disk error, a copy cut short): resume warns, moves
    it aside (left in place it would outrank every new checkpoint) and resumes from the newest readable one."""
    from editkit.methods.base import FitContext
    from editkit.methods.scalpel.fit import ScalpelMethod
    from editkit.methods.scalpel.params import ScalpelParams
    from editkit.model.anatomy import find_anatomy
    from editkit.run.events import EventLog

    items = [
        {"id": f"t{i}", "prompt": p, "correct": c, "incorrect": w} for i, (p, c, w) in enumerate(TRIPLETS)
    ]
    params = ScalpelParams(steps=6, lr=1e-2, batch_size=3, val_fraction=0, checkpoint_every=2, dropout=0.1)

    def fit(run: Path, resume: bool = False, crash_at: int | None = None):
        model, tok = tiny_model("llama")

        class Events(EventLog):
            def emit(self, type, **fields):
                if type == "step" and fields["step"] == crash_at:
                    raise _Crash("the process died here")
                return super().emit(type, **fields)

        run.mkdir(exist_ok=True)
        ctx = FitContext(
            model=model,
            tokenizer=tok,
            anatomy=find_anatomy(model),
            params=params,
            data={
                "target_train": items,
                "target_test": items[:4],
                "general_train": ["The quick brown fox jumps over the lazy dog."],
            },
            events=Events(run / "events.jsonl", "t"),
            run_dir=run,
            seed=0,
            resume=resume,
        )
        try:
            return {op.module: (op.A, op.B) for op in ScalpelMethod().fit(ctx).edit.ops}
        finally:
            ctx.events.close()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = fit(tmp_path / "whole")
        run = tmp_path / "cut"
        with pytest.raises(_Crash):
            fit(run, crash_at=5)
        ckdir = run / "checkpoints"
        good = ckdir / "step-0000004.pt"
        assert sorted(p.name for p in ckdir.iterdir()) == [good.name]
        damaged = ckdir / "step-0000006.pt"  # a newer checkpoint, cut short
        damaged.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        resumed = fit(run, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert resumed.keys() == reference.keys()
    for name, (a, b) in reference.items():
        assert torch.equal(resumed[name][0], a) and torch.equal(resumed[name][1], b), name
    logs = [(e["level"], e["message"]) for e in read_events(run) if e["type"] == "log"]
    warned = [m for lvl, m in logs if lvl == "warning" and "unreadable checkpoint" in m]
    assert len(warned) == 1 and warned[0].startswith(f"{damaged}: unreadable checkpoint skipped (")
    assert warned[0].endswith("moved aside to .step-0000006.pt.unreadable")
    assert ("info", "resumed from checkpoint at step 4") in logs
    assert sorted(p.name for p in ckdir.iterdir()) == [".step-0000006.pt.unreadable", "step-0000006.pt"]


def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_run_resumes(tmp_path):
    """`ulimit -f` below a checkpoint's size (the events log and the run's small files fit): the apply
    stops at the first checkpoint with one line naming it, leaves no temporary file, and `--resume` with
    the limit lifted finishes the run."""
    import resource

    from editkit.data.recipe_data import load_data
    from editkit.methods import get_method
    from editkit.spec.recipe import load_recipe

    recipe = _recipe(tmp_path)
    out = tmp_path / "run"
    limit = 16_000
    # the datasets library caches what it loads (arrow files, bigger than the limit) under HF_HOME: load
    # the recipe's data once here, so that under the limit the checkpoint is what does not fit
    r = load_recipe(recipe)
    load_data(r, get_method(r.method.name).needs)

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    p = subprocess.run(
        [EDITKIT, "apply", str(recipe), "--out", str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=small_files,
    )
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "step-0000004.pt: could not be written" in line, line
    assert "free there" in line
    assert sorted(x.name for x in (out / "checkpoints").iterdir()) == []
    errors = [e for e in read_events(out) if e["type"] == "error"]
    assert [e["stage"] for e in errors] == ["fit"]
    p = subprocess.run(
        [EDITKIT, "apply", str(recipe), "--out", str(out), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "metrics.json").read_text())["export"]["path"] == "model"
