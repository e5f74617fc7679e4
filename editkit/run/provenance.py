"""Which editkit source made a run: the git commit (and repository URL) recorded in metrics, run.json and
the card, so its "Reproduce" step installs exactly that code (editkit is not on PyPI)."""

from __future__ import annotations

import json
import subprocess
from functools import lru_cache
from importlib.metadata import distribution
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 and res.stdout.strip() else None


def _from_install_metadata() -> dict:
    """pip records the commit of a ``pip install git+URL@rev`` in the dist-info's direct_url.json (PEP 610)."""
    try:
        text = distribution("editkit").read_text("direct_url.json")
        info = json.loads(text) if text else {}
    except Exception:  # not installed as a distribution, or no such file
        return {}
    vcs = info.get("vcs_info") or {}
    if vcs.get("commit_id"):
        return {"commit": vcs["commit_id"], "url": info.get("url"), "dirty": False}
    return {}


@lru_cache(maxsize=1)
def source_revision() -> dict:
    """{"commit", "dirty", "url"} of the editkit source in use; values None where unknown."""
    commit = _git("rev-parse", "HEAD") if (SOURCE_ROOT / "editkit").is_dir() else None
    if commit and _git("rev-parse", "--show-toplevel") == str(SOURCE_ROOT):
        status = _git(
            "status", "--porcelain", "--untracked-files=no", "--", "editkit", "tui", "pyproject.toml"
        )
        url = _git("config", "--get", "remote.origin.url")
        return {"commit": commit, "dirty": bool(status), "url": url}
    meta = _from_install_metadata()
    return {"commit": meta.get("commit"), "dirty": meta.get("dirty"), "url": meta.get("url")}


def install_command(revision: dict | None) -> list[str]:
    """Shell lines that install the editkit source a run used (a placeholder URL where none was recorded)."""
    rev = revision or {}
    commit, url = rev.get("commit"), rev.get("url")
    if not commit:
        return [
            "# editkit is not on PyPI and this run recorded no source commit: install the editkit source you",
            "# have (pip install torch first on a CPU-only machine, e.g. torch==2.13.0)",
            "pip install ./editkit",
        ]
    lines = ["# editkit is not on PyPI: install its source at the commit that made this model"]
    if rev.get("dirty"):
        lines.append("# (the run's source tree had uncommitted changes on top of this commit)")
    if url and not url.startswith("file:"):
        lines.append(f'pip install "editkit @ git+{url}@{commit}"')
    else:
        lines += [
            "git clone <editkit repository URL> editkit-src",
            f"git -C editkit-src checkout {commit}",
            "pip install ./editkit-src  # on a CPU-only machine: pip install torch==2.13.0 first",
        ]
    return lines
