"""The base model's refusal evaluation, computed once per (weights, settings) and kept on disk (issue 27).

The base model's greedy responses to the same prompts under the same settings are the same in every run, and
so are the markers' and the judge's verdicts on them and the harmless prompts' first-token distribution. The
``base`` phase of ``refusal_metrics`` looks them up here first; a miss measures them and stores them.

* Where: ``$EDITKIT_EVAL_CACHE``, default ``$EDITKIT_HOME/eval-cache`` (``~/.cache/editkit/eval-cache``). Every
  file there is safe to delete: a missing entry is measured again.
* Key: sha256 of the weights' content (every top-level file of the model folder, each file's sha256
  memoised by (path, size, mtime, ctime, inode) in ``file-sha256.json``; a Hub model by its commit), the
  dtype, device and attention implementation, torch and transformers versions, the prompts and their
  chat-templated text, ``max_new_tokens``, the judge (markers, the base model itself, or another model
  folder's content hash) and the scorer's own source (this module, chat.py, judge.py, metrics.py): a change
  to any of them is a miss.
* Entry: one ``<key>.safetensors`` file: the harmless first-token log-probs as a tensor, everything else
  (prompts, responses, marker and judge verdicts) as JSON in its metadata, with a sha256 over both. Written to
  a temporary file, flushed and renamed, so a reader sees a whole entry or none; a damaged entry is ignored
  with one warning line and measured again (the new entry replaces it).
* ``eval.cache: false`` (``--set eval.cache=false``) neither reads nor writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from editkit.eval.refusal.chat import chat_prompts
from editkit.eval.store import (  # noqa: F401 - CACHE_ENV, cache_dir, folder_digest: this cache's API too
    CACHE_ENV,
    DamagedEntry,
    cache_dir,
    folder_digest,
    model_identity,
    read_payload,
    runtime_fields,
    sha,
    source_digest,
    write_payload,
)
from editkit.model.demo import demo_model_dir
from editkit.model.load import PLANTED_MODELS, planted_model_dir
from editkit.model.pypi import PYPI_MODELS, model_dir

#: bumped when the entry's layout changes (the scorer's source is in the key anyway)
SCHEMA = 1
#: the modules whose code decides the cached values
SCORER_FILES = ("base_cache.py", "chat.py", "judge.py", "metrics.py")


def scorer_digest() -> str:
    """sha256 of the code (``source_digest``: no comments or docstrings) of the modules that compute the cached
    values."""
    here = Path(__file__).resolve().parent
    return sha("".join(source_digest((here / f).read_bytes()) for f in SCORER_FILES))[:16]


def judge_folder(spec: str) -> Path | None:
    """The folder a judge given by name or path loads from, when it is a local one (demo, a named or
    planted model, a folder); None for a Hub id, whose revision is only known once it is loaded."""
    p = Path(spec).expanduser()
    if p.is_dir():
        return p
    if spec == "demo":
        return demo_model_dir()
    if spec in PYPI_MODELS:
        return model_dir(PYPI_MODELS[spec])
    if spec in PLANTED_MODELS:
        return planted_model_dir(spec)
    return None


def _judge_identity(ctx, base: str, root: Path, write_memo: bool) -> tuple[str | None, str]:
    spec = getattr(ctx, "refusal_judge", "markers")
    if spec in ("markers", "self"):  # 'self': the base model's own weights, loaded with its spec
        return (spec if spec == "markers" else f"self:{base}"), ""
    folder = judge_folder(spec)
    if folder is None or not (folder / "config.json").exists():
        return (
            None,
            f"the judge {spec} is not a local model folder (its weights cannot be hashed before loading)",
        )
    digest, _ = folder_digest(folder, root, write_memo)
    return f"files:{digest}:dtype=auto", ""  # content, not name: a copy of the folder is the same judge


# ------------------------------------------------------------------------------------------------------
# the key
# ------------------------------------------------------------------------------------------------------


def cache_key(ctx, sets: dict[str, list[str]], max_new: int) -> tuple[str | None, dict]:
    """(key, what went into it) for the base evaluation of ``sets`` (role -> prompts); key None, with
    ``why`` in the dict, when the model's (or judge's) weights cannot be identified."""
    root = cache_dir()
    t0 = time.time()
    base, why, read = model_identity(ctx.model_path, ctx.model, root, ctx.is_main)
    judge, why_j = _judge_identity(ctx, base or "", root, ctx.is_main) if base else (None, why)
    seconds = round(time.time() - t0, 2)
    if base is None or judge is None:
        return None, {"why": why or why_j}
    parts: dict[str, Any] = {
        "schema": SCHEMA,
        "scorer": scorer_digest(),
        "model": base,
        **runtime_fields(ctx.model, getattr(ctx, "model_spec", None)),
        "judge": judge,
        "max_new_tokens": max_new,
        "prompts": {r: sha(json.dumps(p)) for r, p in sets.items()},
        "chat_text": {r: sha(json.dumps(chat_prompts(ctx.tokenizer, p))) for r, p in sets.items()},
    }
    key = sha(json.dumps(parts, sort_keys=True))[:32]
    return key, {"parts": parts, "hash_seconds": seconds, "hashed_bytes": read}


# ------------------------------------------------------------------------------------------------------
# entries
# ------------------------------------------------------------------------------------------------------


def entry_path(key: str) -> Path:
    return cache_dir() / f"{key}.safetensors"


def write_entry(key: str, raw: dict, parts: dict) -> Path:
    """Store ``raw`` (``sets``: role -> prompts/responses/markers/judge; ``harmless_lp``: a tensor or None)."""
    tensors = {} if raw.get("harmless_lp") is None else {"harmless_lp": raw["harmless_lp"]}
    payload = {"schema": SCHEMA, "key": key, "sets": raw["sets"], "settings": parts, "created": time.time()}
    path = entry_path(key)
    write_payload(path, "editkit_base_eval", payload, tensors)
    return path


def read_entry(key: str) -> dict | None:
    """The stored ``raw`` of ``key``; None when there is none; DamagedEntry when the file is not whole."""
    got = read_payload(entry_path(key), "editkit_base_eval")
    if got is None:
        return None
    data, tensors = got
    if data.get("schema") != SCHEMA or data.get("key") != key or not isinstance(data.get("sets"), dict):
        raise DamagedEntry("not an entry of this key")
    return {"sets": data["sets"], "harmless_lp": tensors.get("harmless_lp"), "created": data.get("created")}


def cached_measure(ctx, sets: dict[str, list[str]], max_new: int, measure: Callable[[], dict]) -> dict:
    """The base evaluation of ``sets`` from the cache, or ``measure()`` stored there. What happened is in
    ``ctx.baseline["eval_cache"]`` ({status: hit|stored|off|unavailable, key, path, ...}); a hit counts
    every unit of the evaluation's progress at once."""
    if not getattr(ctx, "base_eval_cache", False):
        ctx.baseline["eval_cache"] = {"status": "off"}
        return measure()
    key, info = cache_key(ctx, sets, max_new)
    if key is None:
        ctx.events.log(f"base evaluation cache: not used ({info['why']})")
        ctx.baseline["eval_cache"] = {"status": "unavailable", "why": info["why"]}
        return measure()
    try:
        raw = read_entry(key)
    except DamagedEntry as e:
        ctx.events.log(
            f"base evaluation cache: entry {key} is damaged ({e}); measuring again", level="warning"
        )
        raw = None
    path = entry_path(key)
    if raw is not None:
        ctx.events.log(f"base evaluation: from cache (key {key}, {path})")
        ctx.count(units(raw))
        ctx.baseline["eval_cache"] = {
            "status": "hit",
            "key": key,
            "path": str(path),
            "created": raw["created"],
        }
        return raw
    raw = measure()
    status = "stored"
    if ctx.is_main:
        try:
            write_entry(key, raw, info["parts"])
            ctx.events.log(f"base evaluation: stored in the cache (key {key}, {path})")
        except OSError as e:  # a full disk or a read-only cache: the run goes on without the entry
            status = "not stored"
            ctx.events.log(f"base evaluation cache: could not store {key} ({e})", level="warning")
    ctx.baseline["eval_cache"] = {"status": status, "key": key, "path": str(path)}
    ctx.baseline["eval_cache"].update(hash_seconds=info["hash_seconds"], hashed_bytes=info["hashed_bytes"])
    return raw


def units(raw: dict) -> int:
    """The progress units a measured ``raw`` counted: each response generated and judged, each harmless
    prompt's first-token forward."""
    n = sum(len(s["responses"]) + len(s.get("judge") or []) for s in raw["sets"].values())
    lp = raw.get("harmless_lp")
    return n + (int(lp.shape[0]) if lp is not None else 0)
