"""User-facing errors. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


class EditkitError(Exception):
    """A problem the user can fix (bad recipe, missing file, unsupported model...).

    The message is a single line that names the file/field and says what is wrong.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RecipeError(EditkitError):
    """The recipe file or an override is invalid."""


class ModelLoadError(EditkitError):
    """The model could not be found, loaded or understood."""


class DataError(EditkitError):
    """A dataset could not be found, loaded, or is empty/malformed."""


class AnatomyError(ModelLoadError):
    """The architecture is not one editkit can address."""


class OutputError(EditkitError):
    """The output location is unusable (exists and is not an editkit run, ...)."""


class HubError(EditkitError):
    """Pushing to / talking with the Hub failed."""


def scrub_secrets(text: str) -> str:
    """Remove Hub tokens (and the values of *TOKEN* environment variables) from a message."""

    for key, value in os.environ.items():
        if "TOKEN" in key.upper() and value and len(value) >= 8:
            text = text.replace(value, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


#: errno values that mean "the data did not fit": no space, the file-size limit (``ulimit -f``), a quota
_FULL = {
    28: "no space left on the device",
    27: "the file-size limit (ulimit -f) was reached",
    122: "the disk quota is used up",
}


def disk_full_reason(e: BaseException) -> str | None:
    """Why ``e`` is a write that did not fit (None when it is something else). safetensors reports the
    OS error inside its own exception's text ("... (os error 28)")."""

    errno = getattr(e, "errno", None)
    if isinstance(e, OSError) and errno in _FULL:
        return _FULL[errno]
    m = re.search(r"\(os error (\d+)\)", str(e))
    if m and int(m.group(1)) in _FULL:
        return _FULL[int(m.group(1))]
    if isinstance(e, OSError) and re.fullmatch(r"\d+ requested and \d+ written", str(e)):
        # numpy's tofile (the gguf writer) reports a short write without an errno
        return SHORT_WRITE
    return None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


#: what a short write looks like where the writer hides the OS error (numpy's tofile, torch.save)
SHORT_WRITE = "a write was cut short (no space left on the device, or the file-size limit)"


def disk_full_error(
    e: BaseException, target, needed: int | None = None, reason: str | None = None
) -> OutputError:
    """One line for a write that did not fit: what could not be written, why, how much it needs and how
    much is free there, and what to do."""

    where = Path(getattr(e, "filename", None) or target)
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        free = None
    need = f"it needs about {_size(needed)}, " if needed else ""
    return OutputError(
        f"{where}: could not be written: {reason or disk_full_reason(e)} ({need}{_size(free)} free there); "
        "nothing was left half-written: free space (or raise the limit) and run the command again"
    )
