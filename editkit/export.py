"""Export: write the merged model atomically and prove it reloads as the edited model.

The folder is written under a temporary name next to the destination and renamed into place, so a crash
or Ctrl-C leaves the destination either absent or complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from editkit import __version__
from editkit.errors import EditkitError
from editkit.models import DTYPES

#: max |Δlogit| allowed between the edited model and its fp32 export reloaded from disk
EXPORT_TOLERANCE = 1e-4


@contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``dest`` on success (replacing an existing one)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            if old.exists():
                shutil.rmtree(old)
            dest.replace(old)
            tmp.replace(dest)
            shutil.rmtree(old)
        else:
            tmp.replace(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def probe_inputs(tokenizer, texts: list[str] | None = None, max_length: int = 48) -> dict[str, torch.Tensor]:
    """A small fixed batch used to compare the in-memory edited model with the exported one."""
    texts = texts or [
        "The quick brown fox jumps over the lazy dog because",
        "In 1969 the first people walked on the moon, and",
        "def add(a, b):\n    return",
    ]
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


@torch.no_grad()
def logits_of(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    dev = next(model.parameters()).device
    out = model(**{k: v.to(dev) for k, v in inputs.items()})
    return out.logits.float().cpu()


def export_model(
    model,
    tokenizer,
    dest: Path,
    *,
    dtype: str = "same",
    max_shard_size: str = "2GB",
    extra: Callable[[Path], None] | None = None,
) -> list[str]:
    """save_pretrained (safetensors, sharded) + tokenizer + generation config, atomically.

    ``extra(tmpdir)`` may add files (card, edit artifact) before the rename. Returns written file names.
    """
    target_dtype = DTYPES.get(dtype)
    with atomic_dir(dest) as tmp:
        orig = next(model.parameters()).dtype
        if target_dtype is not None and target_dtype != orig:
            model.to(target_dtype)
        try:
            model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        finally:
            if target_dtype is not None and target_dtype != orig:
                model.to(orig)
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    return files


def single_device(model) -> torch.device:
    """The one device all of ``model``'s parameters are on; the CPU for a model spread over several."""
    devices = {p.device for p in model.parameters()}
    return devices.pop() if len(devices) == 1 else torch.device("cpu")


def verify_export(
    dest: Path,
    reference_logits: torch.Tensor,
    inputs: dict[str, torch.Tensor],
    like=None,
) -> float:
    """Reload ``dest`` with plain transformers (fp32, safetensors) and return the max-abs logit diff.

    The reload goes to the device of ``like`` (the model the reference logits came from; the CPU when it is
    spread over several or not given): the same weights give logits that differ by ~1e-4 between a CPU and a
    GPU forward pass (different kernels), which is not an export error."""
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32, use_safetensors=True)
    reloaded.to(single_device(like) if like is not None else "cpu")
    reloaded.eval()
    diff = (logits_of(reloaded, inputs) - reference_logits).abs().max().item()
    del reloaded
    return float(diff)


def embeddings_tied(path_or_model) -> bool:
    from transformers import AutoModelForCausalLM

    m = path_or_model
    if isinstance(m, (str, Path)):
        m = AutoModelForCausalLM.from_pretrained(m, dtype=torch.float32, use_safetensors=True)
    out = m.get_output_embeddings()
    return out is not None and out.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()


def run_info(recipe, run_id: str, base_model: str | None, license: str | None, **more) -> dict:
    """``editkit/run.json`` of an export (provenance): the same fields from a run and from a re-export."""
    from editkit.provenance import source_revision

    target = recipe.data.target
    return {
        "editkit_version": __version__,
        "editkit_revision": source_revision(),
        "recipe_hash": recipe.hash,
        "method": recipe.method.name,
        # what was removed: `editkit eval` on this export scores it as the target, not as held-out
        "capability": target.source if target is not None else None,
        "base_model": base_model,
        "license": license,
        "run_id": run_id,
        **more,
    }


def write_editkit_folder(root: Path, edit, run_info: dict, recipe_text: str) -> None:
    """The ``editkit/`` folder of an export: the edit artifact, run.json (provenance) and the recipe."""
    edit.save(root / "editkit")
    (root / "editkit" / "run.json").write_text(json.dumps(run_info, indent=1))
    (root / "editkit" / "recipe.yaml").write_text(recipe_text)


def reference_logits(model, tokenizer, edit) -> tuple[dict, torch.Tensor]:
    """(probe inputs, the edited model's logits on them): what the reloaded export must reproduce."""
    inputs = probe_inputs(tokenizer)
    with edit.applied(model):
        return inputs, logits_of(model, inputs)


def check_export(dest: Path, reference, inputs, model, dtype: str, tied_before: bool | None = None) -> dict:
    """Reload ``dest`` and compare with the edited model's ``reference`` logits; raise if an exact export
    (fp32 model, dtype same/float32) differs by more than EXPORT_TOLERANCE, or if tied embeddings came
    untied. Returns the numbers the run records."""
    diff = verify_export(dest, reference, inputs, like=model)
    info = {"max_abs_logit_diff": diff, "tied_embeddings": embeddings_tied(dest)}
    exact = dtype in ("same", "float32") and next(model.parameters()).dtype == torch.float32
    info["tolerance"] = EXPORT_TOLERANCE if exact else None
    if exact and diff > EXPORT_TOLERANCE:
        raise EditkitError(
            f"export check failed: reloaded model differs from the edited model by {diff:.3g} > {EXPORT_TOLERANCE}"
        )
    if tied_before and not info["tied_embeddings"]:
        raise EditkitError("export check failed: the input/output embeddings were tied and are not any more")
    return info
