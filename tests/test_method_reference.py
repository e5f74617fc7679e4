"""docs/methods.md is the generated parameter reference of every registered method, and up to date."""

from __future__ import annotations

from pathlib import Path

from editkit.methods import get_method, method_names
from editkit.methods.reference import method_reference_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "methods.md"


def test_docs_methods_md_is_current():
    assert DOC.read_text(encoding="utf-8") == method_reference_markdown(), (
        "docs/methods.md is stale: python -m editkit.methods.reference > docs/methods.md"
    )


def test_every_parameter_of_every_method_is_listed_with_its_default():
    text = method_reference_markdown()
    for name in method_names():
        assert f"## `{name}`" in text
        for field in get_method(name).params_cls.model_fields:
            if field != "name":
                assert f"| `{field}` |" in text, (name, field)
    assert (
        "| `refine` | int | `0` |" in text
        and "| `edit_from` | int \\| Literal['auto'] \\| None | `null` |" in text
    )
    assert "| `edit_from_fracs` | list[float] | `[0.0, 0.5, 0.75, 1.0]` |" in text
