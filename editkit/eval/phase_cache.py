"""The base model's side of a run, measured once per (weights, inputs, settings, editkit source) and reused.

The base model is the same in every run of a model: its evaluation suite (target and held-out accuracy,
perplexity, BLiMP, the drift baseline, the greedy generations) and its removal checks (the paraphrase families
included) come out the same for the same items under the same settings. A run of a recipe that an earlier run already
measured on the same weights (the same recipe with another ``lambda_text``, another method, a resumed
experiment) reads them from the cache instead: on the demo model that is the ``eval_base`` stage and about
a third of the checks.

* Key (per kind of measurement: ``suite``, ``check:<name>``): the weights'
  content (``editkit.eval.store``), the model spec's dtype/revision, the parameters' dtype and device, the
  attention implementation, torch and transformers versions, **the code of every source file of the editkit
  package** (any change to editkit's code is a miss; comments and docstrings are not code here) and of each
  suite part or check defined outside it (``code_digest``), and the measurement's own inputs (its items,
  prompts, batch size and options) — so a hit returns exactly what measuring would, number for number.
* Entry: ``phase-<key>.safetensors`` beside the refusal cache's entries (``editkit.eval.store``): tensors as
  tensors, the rest as JSON.
* Off with ``eval.cache: false``, and in runs of several processes (each would have to agree on hit or miss).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from editkit.eval.store import (
    DamagedEntry,
    cache_dir,
    model_identity,
    read_payload,
    runtime_fields,
    sha,
    source_digest,
    write_payload,
)

SCHEMA = 1
FIELD = "editkit_phase_cache"

Measure = Callable[[], tuple[dict, dict[str, torch.Tensor]]]


@cache
def package_digest() -> str:
    """sha256 over the path and code (``source_digest``) of every ``.py`` file of the installed editkit package."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(root.rglob("*.py"))
    return sha("\n".join(f"{f.relative_to(root)}\0{source_digest(f.read_bytes())}" for f in files))[:32]


def code_digest(*objs: Any) -> list[str]:
    """``source_digest`` of the source file of each object's class or module: what makes a measurement
    defined outside editkit (a check added with ``register_check``, a suite part added to ``PARTS``) part of
    the key."""
    out = []
    for obj in objs:
        try:
            path = inspect.getsourcefile(obj if inspect.isclass(obj) or inspect.ismodule(obj) else type(obj))
            out.append(source_digest(Path(path).read_bytes())[:16] if path else "unknown")
        except (TypeError, OSError):
            out.append("unknown")
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | int | str | bool) or x is None:
        return x
    return repr(x)


@dataclass
class PhaseCache:
    """One run's view of the cache: the model it was opened for, and what each lookup did (``status``)."""

    model: Any
    model_path: str
    model_spec: Any = None
    enabled: bool = True
    write: bool = True
    log: Callable[..., None] = lambda *_a, **_k: None
    #: kind → {status: hit | stored | not stored | unavailable, key}
    status: dict[str, dict] = field(default_factory=dict)
    _identity: dict | None = None
    _why: str = ""

    def identity(self) -> dict | None:
        """What the base model is (None when its weights cannot be identified; the reason in ``_why``)."""
        if self._identity is None and not self._why:
            ident, why, _read = model_identity(self.model_path, self.model, cache_dir(), self.write)
            if ident is None:
                self._why = why
                return None
            self._identity = {
                "schema": SCHEMA,
                "editkit": package_digest(),
                "model": ident,
                **runtime_fields(self.model, self.model_spec),
            }
        return self._identity

    def key(self, kind: str, inputs: Any) -> str | None:
        ident = self.identity()
        if ident is None:
            return None
        blob = {"identity": ident, "kind": kind, "inputs": sha(json.dumps(_jsonable(inputs), sort_keys=True))}
        return sha(json.dumps(blob, sort_keys=True))[:32]

    def measured(
        self, kind: str, inputs: Any, measure: Measure
    ) -> tuple[dict, dict[str, torch.Tensor], bool]:
        """(payload, tensors, hit): the stored measurement of ``kind`` on ``inputs``, or ``measure()`` stored.
        ``measure`` returns (JSON-able payload, tensors)."""
        if not self.enabled:
            return (*measure(), False)
        key = self.key(kind, inputs)
        if key is None:
            self.status[kind] = {"status": "unavailable", "why": self._why}
            return (*measure(), False)
        path = cache_dir() / f"phase-{key}.safetensors"
        try:
            got = read_payload(path, FIELD)
        except DamagedEntry as e:
            self.log(
                f"base phase cache: entry {key} ({kind}) is damaged ({e}); measuring again", level="warning"
            )
            got = None
        if got is not None and got[0].get("key") == key and "value" in got[0]:
            self.status[kind] = {"status": "hit", "key": key}
            return got[0]["value"], got[1], True
        payload, tensors = measure()
        payload = json.loads(json.dumps(payload))  # what a hit returns: the same numbers, lists for tuples
        status = "stored"
        if self.write:
            try:
                write_payload(
                    path, FIELD, {"key": key, "kind": kind, "created": time.time(), "value": payload}, tensors
                )
            except OSError as e:  # a full disk or a read-only cache: the run goes on without the entry
                status = "not stored"
                self.log(f"base phase cache: could not store {key} ({e})", level="warning")
        self.status[kind] = {"status": status, "key": key}
        return payload, tensors, False


def phase_cache_of(run_ctx, recipe, world: int, log: Callable[..., None]) -> PhaseCache:
    """The run's cache: on with ``eval.cache`` in a single-process run; writes from the main process."""
    return PhaseCache(
        model=run_ctx.model,
        model_path=run_ctx.model_path,
        model_spec=recipe.model,
        enabled=bool(recipe.eval.cache) and world == 1,
        write=run_ctx.is_main,
        log=log,
    )
