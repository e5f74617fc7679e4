"""Export: write the merged model atomically and prove it reloads as the edited model.

The folder is written under a temporary name next to the destination and renamed into place, so a crash
or Ctrl-C leaves the destination either absent or complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from editkit import __version__
from editkit.errors import EditkitError, disk_full_error, disk_full_reason
from editkit.model.load import DTYPES
from editkit.run.provenance import source_revision

#: max |Δlogit| allowed between the fp32 edited model (edit applied as hooks) and its merged weights
EXPORT_TOLERANCE = 1e-4
#: relative max |Δlogit| allowed when the edited model is spread over devices and its reload runs on one
#: (different kernels); on one device the reload must reproduce the merged model exactly (tolerance 0)
CROSS_DEVICE_TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}


_TMP_MARK = ".tmp-"


#: export.dtype → the safetensors dtype the weights are written in
EXPORT_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def update_config_dtype(path: Path, target: str | None) -> None:
    """Record the exported dtype (a safetensors dtype name) in config.json, as save_pretrained would."""
    if target is None or not path.exists():
        return
    cfg = json.loads(path.read_text())
    name = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[target]
    keys = [k for k in ("dtype", "torch_dtype") if k in cfg] or ["dtype"]
    for k in keys:
        cfg[k] = name
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _pid_alive(pid: int) -> bool:

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def clean_stale(dest: Path) -> list[Path]:
    """Remove what an interrupted ``atomic_dir(dest)`` left beside ``dest``, and only that: temporary folders
    named ``.<dest>.tmp-<pid>-*`` whose process is gone, and ``.<dest>.old`` (put back in place when a
    crash fell between the two renames, so the last complete export is not lost). Returns what was removed."""

    dest = Path(dest)
    removed = []
    old = dest.with_name(f".{dest.name}.old")
    if old.is_dir():
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old)
        else:
            old.replace(dest)
    if dest.parent.is_dir():
        own = re.compile(re.escape(f".{dest.name}{_TMP_MARK}") + r"(\d+)-[^/]+")
        for p in dest.parent.iterdir():
            m = own.fullmatch(p.name)
            if m and p.is_dir() and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


@contextmanager
def atomic_dir(dest: Path, needed: int | None = None) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``dest`` on success (replacing an existing one).

    The temporary folder's name carries this process's id, so a later run can tell a folder left by a
    killed export (its process is gone: removed) from one still being written (left alone). A write that
    does not fit (disk full, ``ulimit -f``) leaves no temporary folder and raises one line that says how
    much the export needs (``needed`` bytes, when the caller knows)."""

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}{_TMP_MARK}{os.getpid()}-", dir=dest.parent))
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
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full_reason(e):
            raise disk_full_error(e, dest, needed) from None
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
    with atomic_dir(dest, needed=weights_bytes(model, target_dtype)) as tmp:
        orig = next(model.parameters()).dtype
        kwargs: dict = {}
        if target_dtype is not None and target_dtype != orig:
            # a cast copy of the weights, not model.to(): a round trip through a narrower dtype would leave
            # the in-memory model rounded (and the export check would compare against a changed model)
            state = model.state_dict()
            cast: dict[int, torch.Tensor] = {}  # tied tensors stay one tensor
            kwargs["state_dict"] = {
                k: cast.setdefault(id(v), v.to(target_dtype)) if v.is_floating_point() else v
                for k, v in state.items()
            }
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size, **kwargs)
        if kwargs:  # save_pretrained records the model's own dtype
            update_config_dtype(tmp / "config.json", EXPORT_DTYPES[dtype])
        tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
    return files


def weights_bytes(model, dtype: torch.dtype | None = None) -> int:
    """Bytes the model's weights take on disk in ``dtype`` (its own where None); tied tensors once."""
    seen: dict[int, int] = {}
    for t in model.state_dict().values():
        size = dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size()
        seen.setdefault(t.data_ptr() if t.numel() else id(t), t.numel() * size)
    return sum(seen.values())


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


def _export_dtype(model, dtype: str) -> torch.dtype:
    target = DTYPES.get(dtype)
    return target if target is not None else next(model.parameters()).dtype


def compare_tensors(dest: Path, model, dtype: torch.dtype) -> int:
    """Every tensor in ``dest``'s safetensors equals the in-memory (merged) model's, cast to ``dtype``,
    bit for bit; both sides merge in fp32 and cast back once, so anything else is an export error.
    Returns how many tensors were compared (parameters offloaded to disk/meta are skipped)."""
    from safetensors import safe_open

    state = {k: v for k, v in model.state_dict().items() if v.device.type != "meta"}
    state.update(checkpoint_state(model, state))
    prefix = getattr(model, "base_model_prefix", "") or ""
    files = sorted(Path(dest).glob("*.safetensors"))
    if not files:
        raise EditkitError(f"export check failed: {dest} holds no .safetensors file")
    n = 0
    for f in files:
        with safe_open(str(f), "pt") as st:
            for key in st.keys():  # noqa: SIM118 - safe_open is not a mapping
                mine = state.get(key, state.get(f"{prefix}.{key}"))
                if mine is None:
                    continue
                got = st.get_tensor(key)
                want = mine.detach().to("cpu", dtype if mine.is_floating_point() else mine.dtype)
                if got.shape != want.shape or got.dtype != want.dtype or not torch.equal(got, want):
                    worst = (
                        (got.float() - want.float()).abs().max().item()
                        if got.shape == want.shape
                        else "shape"
                    )
                    raise EditkitError(
                        f"export check failed: {f.name}: tensor {key} differs from the edited model's "
                        f"({got.dtype} vs {want.dtype}, max |Δ| {worst})"
                    )
                n += 1
    if n == 0:
        raise EditkitError(
            f"export check failed: no tensor of {dest} matches a parameter of the edited model"
        )
    return n


def checkpoint_state(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` under the names (and layout) ``save_pretrained`` writes: transformers 5 fuses the experts
    of MoE models into 3-D tensors on load and splits them back on save (Mixtral's ``block_sparse_moe.
    experts.{e}.w1/w2/w3``, Qwen-MoE's ``mlp.experts.{e}.*_proj``); its own reverse conversion gives the
    saved tensors (exact slices), so they are compared too. Empty for models without a conversion."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # pragma: no cover - older transformers: no conversions
        return {}
    reverted = revert_weight_conversion(model, dict(state))
    return {k: v for k, v in reverted.items() if k not in state}


def check_export(
    dest: Path,
    reference,
    inputs,
    model,
    dtype: str,
    tied_before: bool | None = None,
    *,
    edit=None,
) -> dict:
    """Prove ``dest`` is the edited model, in every dtype.

    1. tensor by tensor: the exported tensors are bit-identical to the in-memory merged model's (cast to the
       export dtype). ``edit`` given means the model is not merged yet (streamed export): merge it now.
    2. logits: ``dest`` reloaded with plain transformers in the export dtype on the model's own device gives
       the merged model's logits within the tolerance for that dtype — 0 when both run the same kernels
       (same device, same dtype, same attention implementation), ``CROSS_DEVICE_TOLERANCE`` (relative to the
       largest logit) when the model is spread over several devices and the reload runs on one.
    3. ``reference`` (the evaluated model: edit applied as hooks/adapter) vs the merged model: recorded as
       ``edit_vs_merged_logit_diff``, enforced (EXPORT_TOLERANCE) for fp32 where the merge is exact math.
    Raises EditkitError on any failure; returns the numbers the run records."""
    from transformers import AutoModelForCausalLM

    if any(p.device.type == "meta" for p in model.parameters()):
        return {"skipped": "parts of the model are offloaded (meta tensors); the export was not checked"}
    if edit is not None:
        edit.merge_into(model)
    target = _export_dtype(model, dtype)
    own = next(model.parameters()).dtype
    merged = logits_of(model, inputs)
    info: dict = {"tensors_identical": compare_tensors(dest, model, target)}
    info["edit_vs_merged_logit_diff"] = float((merged - reference).abs().max())
    if own == torch.float32 and info["edit_vs_merged_logit_diff"] > EXPORT_TOLERANCE:
        raise EditkitError(
            "export check failed: the merged weights differ from the edited model by "
            f"{info['edit_vs_merged_logit_diff']:.3g} > {EXPORT_TOLERANCE} (fp32)"
        )
    device = single_device(model)
    if target != own:  # compare like with like: the edited model built in the export dtype, as a reload is
        # (model.to() would also cast buffers such as rotary frequencies, which from_pretrained keeps fp32)
        twin = AutoModelForCausalLM.from_config(model.config, dtype=target)
        twin.load_state_dict(
            {k: v.to(target) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        )
        merged = logits_of(twin.to(device).eval(), inputs)
        del twin
    spread = len({p.device for p in model.parameters()}) > 1
    attn = getattr(model.config, "_attn_implementation", None)
    kwargs = {"attn_implementation": attn} if attn else {}
    reloaded = AutoModelForCausalLM.from_pretrained(dest, dtype=target, use_safetensors=True, **kwargs)
    reloaded.to(device).eval()
    diff = float((logits_of(reloaded, inputs) - merged).abs().max())
    tied = embeddings_tied(reloaded)
    del reloaded
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(
        target, str(target)
    )
    tol = CROSS_DEVICE_TOLERANCE.get(name, 1e-2) * float(merged.abs().max()) if spread else 0.0
    info.update(
        max_abs_logit_diff=diff,
        tolerance=tol,
        checked_dtype=name,
        checked_device=str(device),
        tied_embeddings=tied,
    )
    if diff > tol:
        raise EditkitError(
            f"export check failed: {dest} reloaded in {name} on {device} differs from the edited model by "
            f"{diff:.3g} > {tol:.3g}"
        )
    if tied_before and not info["tied_embeddings"]:
        raise EditkitError("export check failed: the input/output embeddings were tied and are not any more")
    return info
