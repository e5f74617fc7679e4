"""Faults a user meets with a finished run (issue 28): runs that are moved or copied, two commands on one
run, damaged files and a full disk. Every failure is one line, exit code 2, no traceback, nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from editkit import apply_recipe
from editkit.errors import OutputError
from editkit.run.events import create_run_dir, read_metrics, resolve_recorded, run_lock, run_model_dir
from tests.test_pipeline import TRIPLETS  # the same moral triplets as the pipeline tests

EDITKIT = str(Path(sys.executable).with_name("editkit"))

RECIPE = """\
name: faults
model: {model}
method:
  name: heads
  heads: [[0, 1], [1, 2]]
data:
  target: {target}
eval:
  blimp: false
  robustness: false
  control: false
  max_items: 8
  batch_size: 8
seed: 3
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished tiny run, made with the working directory elsewhere (as `cd project; editkit apply`)."""
    from tests.tiny import save_tiny

    root = tmp_path_factory.mktemp("faults")
    model = save_tiny("llama", root / "tiny-llama", 0)
    target = root / "moral.jsonl"
    target.write_text("".join(json.dumps(r) + "\n" for r in TRIPLETS))
    recipe = root / "faults.yaml"
    recipe.write_text(RECIPE.format(model=model, target=target))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        res = apply_recipe(recipe, runs_root="runs")  # relative, as the CLI's default
    finally:
        os.chdir(cwd)
    return root, root / res.run_dir


def _cli(*args, cwd, env=None, limit_bytes=None, timeout=300):
    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [EDITKIT, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=limit,
    )


def _one_line_error(p, *needles):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---- 1. relocatable runs -------------------------------------------------------------------------------


def test_run_records_its_export_relative_to_itself(finished_run):
    _, run = finished_run
    metrics = read_metrics(run)
    assert metrics["export"]["path"] == "model"
    assert [e["path"] for e in _events(run) if e["type"] == "export"] == ["model"]


def test_card_export_and_eval_of_a_copied_run_touch_only_the_copy(finished_run, tmp_path):
    root, run = finished_run
    copy = tmp_path / "elsewhere" / "copied-run"
    shutil.copytree(run, copy)
    before = _digest(run)
    # from the folder the original run was made in (the case that wrote into the original before)
    p = _cli("card", copy, cwd=root)
    assert p.returncode == 0, p.stderr
    assert f"{copy / 'model' / 'README.md'}" in p.stdout
    # and from an unrelated folder: export (in memory and streamed) and eval
    for args in (["export", copy], ["export", copy, "--streaming"]):
        p = _cli(*args, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert str(copy / "model") in p.stdout
    p = _cli("eval", copy, "--max-items", "4", "--skip", "blimp", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert _digest(run) == before  # the original run is byte-identical
    assert (copy / "model" / "README.md").is_file()


@pytest.mark.parametrize("legacy", ["cwd-relative", "absolute"])
def test_runs_recorded_before_the_change_resolve_inside_the_run(finished_run, tmp_path, legacy):
    """Old metrics.json files stored the export as `runs/<name>/model` (relative to where apply ran) or as
    an absolute path: on a moved copy both mean the copy's own model/, never the original's."""
    root, run = finished_run
    copy = tmp_path / "moved"
    shutil.copytree(run, copy)
    metrics = read_metrics(copy)
    metrics["export"]["path"] = (
        f"runs/{run.name}/model" if legacy == "cwd-relative" else str(run.resolve() / "model")
    )
    (copy / "metrics.json").write_text(json.dumps(metrics))
    assert run_model_dir(copy) == copy / "model"
    before = _digest(run)
    p = _cli("card", copy, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert _digest(run) == before


def test_resolve_recorded_keeps_an_export_dir_outside_the_run(tmp_path):
    outside = tmp_path / "published" / "model"
    assert resolve_recorded(tmp_path / "run", str(outside)) == outside
    assert resolve_recorded(tmp_path / "run", None) == tmp_path / "run" / "model"


# ---- 3. two commands on one run --------------------------------------------------------------------------

HOLD = """
import sys, time
from editkit.run.events import run_lock
with run_lock(sys.argv[1], "export"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(run: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_command_on_a_held_run_gets_one_line_and_writes_nothing(finished_run, tmp_path):
    _, run = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    before = _digest(copy)
    holder = _hold(copy, 60)
    try:
        for args in (["card", copy], ["export", copy], ["robustness", copy], ["push", copy, "--repo", "a/b"]):
            p = _cli(*args, cwd=tmp_path)
            _one_line_error(p, "in use by `editkit export`", f"(pid {holder.pid})", "--wait")
        p = _cli("apply", copy / "recipe.yaml", "--out", copy, "--resume", cwd=tmp_path)
        _one_line_error(p, "in use by `editkit export`")
    finally:
        holder.kill()
        holder.wait()
    after = _digest(copy)
    assert {k: v for k, v in after.items() if k != ".editkit-lock"} == {
        k: v for k, v in before.items() if k != ".editkit-lock"
    }


def test_wait_queues_behind_the_holder(finished_run, tmp_path):
    _, run = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    holder = _hold(copy, 20)  # long enough for the CLI to start and find it held on a loaded machine too
    t0 = time.time()
    p = _cli("card", copy, "--wait", cwd=tmp_path)
    waited = time.time() - t0
    holder.wait()
    assert p.returncode == 0, p.stderr
    assert "waiting for `editkit export`" in p.stderr
    assert waited >= 3  # it really waited for the holder (which held the run for 20 s from before)


def test_a_killed_holder_releases_the_run(finished_run, tmp_path):
    _, run = finished_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    holder = _hold(copy, 60)
    holder.kill()
    holder.wait()
    with run_lock(copy, "card"):  # no stale lock after SIGKILL
        pass


def test_two_applies_on_one_out_and_in_the_same_second(tmp_path):
    # --out: of two commands that both found the folder free, the one that creates it second stops
    create_run_dir(tmp_path / "x", {}, fresh=True)
    with pytest.raises(OutputError, match="another command created it after this one started"):
        create_run_dir(tmp_path / "x", {}, fresh=True)
    # automatic names (runs/<name>-<timestamp>): the second takes the next free name
    a = create_run_dir(tmp_path / "r-20261206-101500", {}, fresh=True, auto_named=True)
    b = create_run_dir(tmp_path / "r-20261206-101500", {}, fresh=True, auto_named=True)
    assert (a.name, b.name) == ("r-20261206-101500", "r-20261206-101500-1")


# ---- 4. damaged files ---------------------------------------------------------------------------------


def _damaged_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _tensor_edit(copy: Path) -> Path:
    """Replace the copy's (tensor-free) head mask by a projection, so its artifact holds a tensor."""
    import torch

    from editkit.edit.edit import Edit, ProjectOut

    d = torch.nn.functional.normalize(torch.randn(64, generator=torch.Generator().manual_seed(0)), dim=0)
    Edit("refusal", [ProjectOut("model.layers.0.self_attn.o_proj", direction=d)]).save(copy / "edit")
    return copy / "edit" / "tensors.safetensors"


def test_truncated_edit_tensors(finished_run, tmp_path):
    copy = _damaged_copy(finished_run[1], tmp_path)
    t = _tensor_edit(copy)
    t.write_bytes(t.read_bytes()[: t.stat().st_size - 100])
    before = _digest(copy / "model")
    for args in (["export", copy], ["export", copy, "--streaming"]):
        _one_line_error(_cli(*args, cwd=tmp_path), "tensors.safetensors", "damaged")
    assert _digest(copy / "model") == before


def test_header_that_claims_terabytes(finished_run, tmp_path):
    copy = _damaged_copy(finished_run[1], tmp_path)
    t = _tensor_edit(copy)
    raw = t.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["data_offsets"] = [0, 4 << 40]  # 4 TB
    h = json.dumps(header).encode()
    t.write_bytes(len(h).to_bytes(8, "little") + h + raw[8 + n :])
    p = _cli("export", copy, cwd=tmp_path, env={})
    _one_line_error(p, "damaged or truncated", name, "4398046511104")


def test_edit_json_whose_tensors_do_not_match(finished_run, tmp_path):
    copy = _damaged_copy(finished_run[1], tmp_path)
    _tensor_edit(copy)
    ej = copy / "edit" / "edit.json"
    meta = json.loads(ej.read_text())
    op = next(o for o in meta["ops"] if o["tensors"])
    key = next(iter(op["tensors"]))
    op["tensors"][key] = "op999.nothing"
    ej.write_text(json.dumps(meta))
    _one_line_error(_cli("export", copy, cwd=tmp_path), "op999.nothing", "do not belong together")


def test_edit_json_that_is_not_json(finished_run, tmp_path):
    copy = _damaged_copy(finished_run[1], tmp_path)
    (copy / "edit" / "edit.json").write_text('{"format": "editkit-edit", "ops": [')
    _one_line_error(_cli("export", copy, cwd=tmp_path), "edit.json", "not valid JSON")


def test_metrics_json_that_is_not_json(finished_run, tmp_path):
    copy = _damaged_copy(finished_run[1], tmp_path)
    (copy / "metrics.json").write_text('{"export": {"path": "mod')
    before = _digest(copy)
    for args in (["card", copy], ["push", copy, "--repo", "a/b"], ["eval", copy]):
        _one_line_error(_cli(*args, cwd=tmp_path), "metrics.json")
    after = _digest(copy)
    assert {k: v for k, v in after.items() if k != ".editkit-lock"} == {
        k: v for k, v in before.items() if k != ".editkit-lock"
    }


# ---- 2. a full disk -------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["in-memory", "streamed", "gguf"])
def test_export_into_a_full_disk(finished_run, tmp_path, how):
    """`ulimit -f` (RLIMIT_FSIZE) in the child: the same EFBIG a full filesystem gives as ENOSPC, for real,
    without root. One line saying what could not be written and how much it needs; the previous export
    intact, no temporary folder left; the same command works once the limit is lifted."""
    copy = _damaged_copy(finished_run[1], tmp_path)
    before = _digest(copy / "model")
    args = {"in-memory": [], "streamed": ["--streaming"], "gguf": ["--gguf", "f16"]}[how]
    # the tiny model's weights are ~100 KB; the gguf f16 file is written after the safetensors
    limit = 60_000
    if how == "gguf":  # safetensors in shards smaller than the limit: only model.gguf outgrows it
        rpath = copy / "recipe.yaml"
        rpath.write_text(rpath.read_text().replace("max_shard_size: 2GB", "max_shard_size: 20KB"))
        limit = 120_000  # above the largest tensor (the 82 KB embedding), below the 0.2 MB model.gguf
    p = _cli("export", copy, *args, cwd=tmp_path, limit_bytes=limit)
    line = _one_line_error(p, "could not be written", "file-size limit", "free there")
    if how != "gguf":
        assert "it needs about" in line
    else:  # numpy's short write inside the gguf writer, with no errno
        assert "model.gguf" in line or "a write was cut short" in line
    assert _digest(copy / "model") == before
    assert sorted(x.name for x in copy.iterdir() if x.name.startswith(".model")) == []
    p = _cli("export", copy, *args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr


WRITE_METRICS = """
import resource, sys
from editkit.run.events import write_metrics
from editkit.errors import EditkitError
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_metrics(sys.argv[1], {"weights": "x" * 100000})
except EditkitError as e:
    print(e)
"""


def test_metrics_json_into_a_full_disk_keeps_the_previous_file(tmp_path):
    (tmp_path / "metrics.json").write_text('{"model": "demo"}')
    p = subprocess.run(
        [sys.executable, "-c", WRITE_METRICS, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stderr
    assert "metrics.json: could not be written: the file-size limit (ulimit -f) was reached" in p.stdout
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"model": "demo"}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["metrics.json"]


def _events(run: Path) -> list[dict]:
    from editkit.run.events import read_events

    return read_events(run)
