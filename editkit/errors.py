"""User-facing errors. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations


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
    import os
    import re

    for key, value in os.environ.items():
        if "TOKEN" in key.upper() and value and len(value) >= 8:
            text = text.replace(value, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)
