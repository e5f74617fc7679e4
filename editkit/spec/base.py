"""The base class of every recipe block: a pydantic model in which an unknown field is an error.

Each block of a recipe (``model``, ``data``, ``eval``, ``export``, ``push``, and the recipe itself) derives
from ``StrictModel``, so a misspelt key is reported (with a "did you mean") instead of silently ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)
