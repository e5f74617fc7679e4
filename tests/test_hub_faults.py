"""Hub faults during a push, against the local Hub-protocol server (real sockets, real huggingface_hub).

What is designed: huggingface_hub retries the requests it retries (preupload, LFS batch/PUT/verify: 5
retries, waits 1, 2, 4, 8, 8 s, or ``Retry-After`` + 1 s), editkit retries the whole push for failures of the
requests huggingface_hub does not retry (whoami, repo info/create, the commit: 1, 2, 4 s or ``Retry-After``),
and then the user gets one line (an ``HubError``; the CLI prints it and exits 2). The repo holds the whole
commit or nothing, and the token shows up nowhere.

huggingface_hub 2.4 has no setting for its backoff (max_retries=5, base_wait_time=1, max_wait_time=8 are
fixed where ``http_backoff`` is called), so in-process tests record its waits instead of sleeping them
(``waits`` fixture); the CLI tests sleep for real and keep their faults cheap (``Retry-After: 0``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from editkit.errors import HubError
from editkit.publish import hub
from editkit.publish.hub import push_folder
from tests.hub_server import DROPPED, hub_server  # noqa: F401  (pytest fixture)
from tests.tiny import tiny_config

TOKEN = "hf_faultyHubSecret0123456789abcdef"  # must never show up anywhere
ENV = "EDITKIT_FAULT_TEST_TOKEN"
REPO = "alice/m"
EDITKIT = str(Path(sys.executable).with_name("editkit"))
PUT = r"^PUT /_lfs_upload/"
PREUPLOAD = r"^POST /api/models/alice/m\d?/preupload/main$"
COMMIT = r"^POST /api/models/alice/m\d?/commit/main$"
HF_BACKOFF = [1, 2, 4, 8, 8]  # huggingface_hub's waits for a request that keeps failing (6 tries)


class _Waits(list):
    """Stands in for the ``time`` module of the code under test: records sleeps instead of sleeping."""

    def sleep(self, seconds):
        self.append(seconds)


@pytest.fixture
def run_folder(tmp_path):
    """An editkit run: recipe, metrics and the exported tiny model (with card and editkit/run.json)."""
    torch.manual_seed(0)
    run = tmp_path / "run"
    folder = run / "model"
    LlamaForCausalLM(tiny_config("llama", 97, max_position_embeddings=64)).save_pretrained(folder)
    (folder / "README.md").write_text("---\ntags:\n- editkit\n---\n# tiny\n")
    (folder / "editkit").mkdir()
    (folder / "editkit" / "run.json").write_text(json.dumps({"method": "heads", "run_id": "r1"}))
    (run / ".editkit-run").write_text("{}")
    (run / "recipe.yaml").write_text("model: {id: tiny}\nmethod: {name: heads}\n")
    (run / "metrics.json").write_text(
        json.dumps({"base_model": "tiny", "recipe_hash": "abc", "export": {"path": "model"}})
    )
    return folder


@pytest.fixture
def alice(hub_server, monkeypatch):  # noqa: F811
    hub_server.add_user("alice", TOKEN)
    monkeypatch.setenv(ENV, TOKEN)
    return hub_server


@pytest.fixture
def waits(monkeypatch):
    """The waits huggingface_hub's http_backoff (``hf``) and editkit's push loop (``editkit``) asked for."""
    from huggingface_hub.utils import _http

    recorded = {"hf": _Waits(), "editkit": _Waits()}
    monkeypatch.setattr(_http, "time", recorded["hf"])
    monkeypatch.setattr(hub, "time", recorded["editkit"])
    return recorded


def _statuses(server, pattern):
    return [status for method, path, status in server.requests if re.search(pattern, f"{method} {path}")]


def _lfs_oid(folder):
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def _local_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_whole_commit(server, repo, folder, out, message="editkit: upload model"):
    """Exactly one editkit commit on top of the creation commit, holding every file, and it is main's head."""
    assert server.commits(repo) == [message, "initial commit"]
    remote = server.repo_files(repo)
    assert remote == {".gitattributes": remote[".gitattributes"], **_local_files(folder)}
    assert server.repos[("model", repo)].branches["main"] == out["commit"]


def _assert_untouched(server, repo):
    """The repo was created (first request of the push) but holds nothing of the push."""
    assert server.commits(repo) == ["initial commit"]
    assert set(server.repo_files(repo)) == {".gitattributes"}


def _push(folder, repo=REPO, **kwargs):
    return push_folder(folder, repo, token_env=ENV, **kwargs)


# ------------------------------------------------------------------ transient: retried, then the whole commit


def test_one_500_on_the_lfs_upload_is_retried_by_huggingface_hub(alice, run_folder, waits):
    alice.fault(PUT, status=500)
    out = _push(run_folder)
    assert _statuses(alice, PUT) == [500, 200]
    assert waits == {"hf": [1], "editkit": []}
    assert _statuses(alice, "whoami") == [200]  # the push itself was not restarted
    _assert_whole_commit(alice, REPO, run_folder, out)


def test_one_429_with_retry_after_on_preupload_is_honoured(alice, run_folder, waits):
    alice.fault(PREUPLOAD, status=429, retry_after=1)
    out = _push(run_folder)
    assert _statuses(alice, PREUPLOAD) == [429, 200]
    assert waits == {"hf": [2.0], "editkit": []}  # Retry-After + 1 s
    _assert_whole_commit(alice, REPO, run_folder, out)


def test_one_connection_dropped_mid_upload_is_retried_by_huggingface_hub(alice, run_folder, waits):
    fault = alice.fault(PUT, drop="request")
    out = _push(run_folder)
    assert fault.hits == 1 and _statuses(alice, PUT) == [DROPPED, 200]
    assert waits == {"hf": [1], "editkit": []}
    _assert_whole_commit(alice, REPO, run_folder, out)


def test_commit_answer_lost_then_the_retried_push_does_not_commit_twice(alice, run_folder, waits):
    """The commit landed but its answer was cut: huggingface_hub does not retry a commit, editkit retries
    the push, huggingface_hub sees nothing changed and skips the commit: one commit, reported."""
    alice.fault(COMMIT, drop="response")
    out = _push(run_folder)
    assert _statuses(alice, COMMIT) == [DROPPED]
    assert waits == {"hf": [], "editkit": [1.0]}
    assert _statuses(alice, "whoami") == [200, 200]
    _assert_whole_commit(alice, REPO, run_folder, out)


def test_429_on_whoami_editkit_waits_as_long_as_retry_after_says(alice, run_folder, waits):
    alice.fault(r"/api/whoami-v2$", status=429, retry_after=3)
    out = _push(run_folder)
    assert _statuses(alice, "whoami") == [429, 200]
    assert waits == {"hf": [], "editkit": [3]}  # not its own 1 s
    _assert_whole_commit(alice, REPO, run_folder, out)


def test_429_retry_after_for_real(alice, run_folder):
    """No recorded waits: huggingface_hub really sleeps Retry-After + 1 s and the push completes."""
    alice.fault(PREUPLOAD, status=429, retry_after=1)
    start = time.monotonic()
    out = _push(run_folder)
    assert time.monotonic() - start >= 2.0
    assert _statuses(alice, PREUPLOAD) == [429, 200]
    _assert_whole_commit(alice, REPO, run_folder, out)


# ------------------------------------------------------------------ persistent: one line, nothing pushed


def test_persistent_500_on_the_lfs_upload(alice, run_folder, waits, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    alice.fault(PUT, status=500, times=None)
    with pytest.raises(HubError) as err:
        _push(run_folder)
    assert str(err.value) == (
        "the Hub kept answering HTTP 500 after huggingface_hub's retries (Error while uploading "
        "'model.safetensors' to the Hub. HfHubHTTPError: Server error "
        f"'500 Internal Server Error' for url '{alice.url}/_lfs_upload/{_lfs_oid(run_folder)}'); "
        "the Hub is having trouble: push alice/m again later; nothing was pushed (the empty repo alice/m was created)"
    )  # the upload URL's signed query is left out
    assert _statuses(alice, PUT) == [500] * 6
    assert waits == {"hf": HF_BACKOFF, "editkit": []}  # editkit does not retry what huggingface_hub retried
    assert _statuses(alice, "whoami") == [200]
    _assert_untouched(alice, REPO)
    out, errs = capfd.readouterr()
    assert TOKEN not in caplog.text + out + errs


def test_persistent_dropped_connection_mid_upload(alice, run_folder, waits):
    alice.fault(PUT, drop="request", times=None)
    with pytest.raises(HubError) as err:
        _push(run_folder)
    assert re.fullmatch(
        rf"the connection to {alice.url} dropped after huggingface_hub's retries "
        r"\(Error while uploading 'model.safetensors' to the Hub. "
        r"(RemoteProtocolError|ReadError|WriteError): [^;]*\); "
        r"check the network \(and HF_ENDPOINT\), then push alice/m again; "
        r"nothing was pushed \(the empty repo alice/m was created\)",
        str(err.value),
    ), str(err.value)
    assert _statuses(alice, PUT) == [DROPPED] * 6
    assert waits == {"hf": HF_BACKOFF, "editkit": []}
    _assert_untouched(alice, REPO)


def test_persistent_429_on_the_commit_editkit_retries_with_retry_after(alice, run_folder, waits):
    alice.fault(COMMIT, status=429, retry_after=2, times=None)
    with pytest.raises(HubError) as err:
        _push(run_folder)
    assert str(err.value) == (
        "the Hub kept answering HTTP 429 after 4 attempts (HfHubHTTPError: 429 Too Many Requests for url: "
        f"{alice.url}/api/models/alice/m/commit/main.); the Hub is rate-limiting: wait a few minutes, then push "
        "alice/m again; nothing was pushed (the empty repo alice/m was created)"
    )
    assert _statuses(alice, COMMIT) == [429] * 4
    assert waits == {"hf": [], "editkit": [2, 2, 4]}  # max(own backoff 1, 2, 4 s, Retry-After)
    _assert_untouched(alice, REPO)


def test_persistent_dropped_commit_says_it_may_not_have_landed(alice, run_folder, waits):
    alice.fault(COMMIT, drop="request", times=None)
    with pytest.raises(HubError) as err:
        _push(run_folder, retries=1)
    assert re.fullmatch(
        rf"the connection to {alice.url} dropped after 2 attempts "
        r"\((RemoteProtocolError|ReadError|WriteError): [^;]*\); "
        r"check the network \(and HF_ENDPOINT\), then push alice/m again; "
        rf"the commit may or may not have been recorded: check {alice.url}/alice/m",
        str(err.value),
    ), str(err.value)
    assert _statuses(alice, COMMIT) == [DROPPED] * 2, "\n".join(map(str, alice.requests))
    _assert_untouched(alice, REPO)  # it was not: the server never read the whole request


# ------------------------------------------------------------------ the real CLI


def _cli_push(run_dir, repo, tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "cli-hf-home"), COLUMNS="200", HF_TOKEN=TOKEN)
    return subprocess.run(
        [EDITKIT, "push", str(run_dir), "--repo", repo],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_push_rides_out_transient_faults_and_fails_in_one_line_on_a_persistent_one(
    alice, run_folder, tmp_path
):
    run_dir = run_folder.parent
    alice.fault(PUT, drop="request")  # huggingface_hub retries the upload
    alice.fault(COMMIT, status=500)  # editkit retries the push
    ok = _cli_push(run_dir, "alice/m", tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    head = alice.repos[("model", "alice/m")].branches["main"]
    assert ok.stdout == f"pushed alice/m @ {head[:10]}: {alice.url}/alice/m\n"
    assert ok.stderr == "Hub request failed (HfHubHTTPError); retry 1/3 in 1.0s\n"
    assert _statuses(alice, PUT) == [DROPPED, 200]
    assert _statuses(alice, COMMIT) == [500, 200]
    message = "editkit: heads edit from tiny (recipe abc)"
    _assert_whole_commit(alice, "alice/m", run_folder, {"commit": head}, message)

    alice.fault(PREUPLOAD, status=429, retry_after=0, times=None)  # 5 real waits of 0 + 1 s
    bad = _cli_push(run_dir, "alice/m2", tmp_path)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr == (
        "error: the Hub kept answering HTTP 429 after huggingface_hub's retries (HfHubHTTPError: 429 Too Many "
        f"Requests for url: {alice.url}/api/models/alice/m2/preupload/main.); the Hub is rate-limiting: wait a "
        "few minutes, then push alice/m2 again; nothing was pushed (the empty repo alice/m2 was created)\n"
    )
    assert _statuses(alice, PREUPLOAD) == [200, 200] + [429] * 6
    _assert_untouched(alice, "alice/m2")
    for proc in (ok, bad):
        assert TOKEN not in proc.stdout + proc.stderr


# ------------------------------------------------------------------ apply --push: events, card, metrics


def test_apply_push_with_a_persistent_hub_fault_records_one_line_and_no_token(
    alice, tmp_path, tiny_dir, monkeypatch, waits, capfd
):
    """`apply --push`: the run's events, card and metrics are written; the failed push is one line there."""
    from editkit import apply_recipe

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    target = tmp_path / "t.jsonl"
    rows = [
        {"id": str(i), "split": "train" if i < 4 else "test", "prompt": "Up is the opposite of"}
        | {"correct": " down", "incorrect": " up"}
        for i in range(8)
    ]
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: faulty-push\nmodel: {tiny_dir('llama')}\nmethod: {{name: heads, heads: [[0, 1]]}}\n"
        f"data:\n  target: {target}\n  heldout: [{target}]\n"
        "eval: {blimp: false, robustness: false, max_items: 4, batch_size: 4}\n"
        "push: {repo_id: alice/applied}\n"
    )
    alice.fault(r"^POST /api/models/alice/applied/commit/main$", status=503, times=None)
    with pytest.raises(HubError) as err:
        apply_recipe(recipe, out=tmp_path / "run", push=True)
    assert str(err.value) == (
        "the Hub kept answering HTTP 503 after 4 attempts (HfHubHTTPError: Server error '503 Service "
        f"Unavailable' for url '{alice.url}/api/models/alice/applied/commit/main'); the Hub is having trouble: "
        "push alice/applied again later; nothing was pushed (the empty repo alice/applied was created)"
    )
    assert waits == {"hf": [], "editkit": [1.0, 2.0, 4.0]}
    _assert_untouched(alice, "alice/applied")
    run = tmp_path / "run"
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in e.items() if k != "ts"} for e in events if e["type"] == "error"] == [
        {
            "type": "error",
            "run_id": "run",
            "stage": "push",
            "message": str(err.value),
            "exc_type": "HubError",
        }
    ]
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "error"
    assert (run / "model" / "README.md").exists() and (run / "metrics.json").exists()
    for f in run.rglob("*"):
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f
    out, errs = capfd.readouterr()
    assert TOKEN not in out + errs
