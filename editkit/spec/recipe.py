"""Recipes: the typed, validated description of one edit run.

A recipe is YAML validated by pydantic *before* any model is loaded. Errors name the file, the line and
the field (``recipes/x.yaml:7: method.rnak: unknown field (did you mean 'rank'?)``).

This module holds the ``Recipe`` that joins the blocks, and the loading, ``--set`` overrides and error
messages; the blocks are in ``editkit.spec.inputs`` (model, data), ``editkit.spec.eval`` and
``editkit.spec.export`` (export, push), on the ``StrictModel`` of ``editkit.spec.base``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, field_validator

from editkit.errors import RecipeError
from editkit.methods.registry import method_names, method_params_class
from editkit.spec.base import StrictModel
from editkit.spec.catalog import resolve_recipe
from editkit.spec.eval import EvalSpec
from editkit.spec.export import ExportSpec, PushSpec
from editkit.spec.inputs import DataSpec, ModelSpec


class Recipe(StrictModel):
    name: str = Field(description="run name (letters, digits, '-', '_', '.')")
    description: str | None = None
    model: ModelSpec
    method: SerializeAsAny[BaseModel]
    data: DataSpec = Field(default_factory=DataSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    push: PushSpec = Field(default_factory=PushSpec)
    seed: int = 0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,99}", v):
            raise ValueError("must be 1-100 characters of letters, digits, '-', '_' or '.'")
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"id": v} if isinstance(v, str) else v

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> Any:
        if isinstance(v, BaseModel):
            return v
        if isinstance(v, str):
            v = {"name": v}
        if not isinstance(v, dict):
            raise ValueError("must be a mapping with 'name' and the method's parameters")
        if "name" not in v:
            raise ValueError("needs a 'name' (one of: " + ", ".join(method_names()) + ")")
        params_cls = method_params_class(str(v["name"]))  # raises ValueError with suggestions
        return params_cls.model_validate(v)

    # -- derived ------------------------------------------------------------------------------------
    def resolved(self) -> dict[str, Any]:
        """The recipe with every default filled in, as plain JSON-able data."""
        return self.model_dump(mode="json")

    @property
    def hash(self) -> str:
        blob = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.resolved(), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------------
# loading, overrides and error messages
# ---------------------------------------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (a silent overwrite hides mistakes), and reports a scalar it
    cannot construct (``2026-02-30``, ``!!float abc``) as a YAML error at its line, not a bare ValueError."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as e:
            kind = str(node.tag).rsplit(":", 1)[-1]
            value = node.value if isinstance(node, yaml.ScalarNode) else kind
            raise yaml.constructor.ConstructorError(
                None, None, f"{value!r} is not a valid {kind} ({e})", node.start_mark
            ) from None


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the deepest YAML node reachable along a pydantic error location."""
    line = None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == str(part):
                    nxt = v
                    line = k.start_mark.line + 1
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _fields_at(loc: tuple, data: dict) -> list[str]:
    """Known field names of the model that owns ``loc`` (for 'did you mean')."""
    model: Any = Recipe
    key_next = False  # the part after a dict field (data.sets.<name>) is a key the user chose
    for part in loc[:-1]:
        if isinstance(part, int) or key_next:
            key_next = False
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        if part == "method":
            name = (data.get("method") or {}).get("name") if isinstance(data.get("method"), dict) else None
            try:
                model = method_params_class(str(name))
            except ValueError:
                return []
            continue
        ann = field.annotation
        key_next = getattr(ann, "__origin__", None) is dict
        cand = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)]
        for a in list(cand):
            cand += [b for b in getattr(a, "__args__", ()) if isinstance(b, type)]
        model = next((a for a in cand if issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _in_file(node: yaml.Node | None, loc: tuple) -> bool:
    """Whether the recipe file itself has the mapping or list at ``loc``."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return False
    return node is not None


def _override_for(
    loc: tuple, overrides: list[str] | tuple[str, ...], node: yaml.Node | None = None
) -> str | None:
    """The ``--set`` argument that wrote the field at ``loc`` (or a mapping above or below it), if any;
    else, when the mapping holding ``loc`` is not in the file, the ``--set`` that made it
    (``--set data.general.limit=5`` on a recipe without ``data.general``: its ``source`` is missing)."""
    path = [str(p) for p in loc]
    keys = [
        (item, [k.strip() for k in item.split("=", 1)[0].split(".")]) for item in reversed(list(overrides))
    ]
    for item, key in keys:
        n = min(len(key), len(path))
        if n and key[:n] == path[:n]:
            return item
    parent = path[:-1]
    if parent and not _in_file(node, loc[:-1]):
        return next((item for item, key in keys if key[: len(parent)] == parent), None)
    return None


def _field_loc(loc: tuple, data: Any) -> tuple:
    """``loc`` without the parts pydantic adds for union members and validators (``str``,
    ``list[DataSource]``, ``literal['f16',...]``, ``function-after[...]``): a name is a field when the
    input has that key, or when it is the last part and names a key missing from a mapping. (Not by
    spelling: a user's unknown key ``method.NAME`` is a field path, not a class name.)"""
    out: list = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out.append(part)
            cur = cur[part] if isinstance(cur, list) and -len(cur) <= part < len(cur) else None
        elif isinstance(cur, dict) and part in cur:
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and i == len(loc) - 1:
            out.append(part)  # a required field the mapping lacks
    return tuple(out)


def format_validation_error(
    err: ValidationError,
    file: str,
    node: yaml.Node | None,
    data: dict,
    overrides: list[str] | tuple[str, ...] = (),
) -> str:
    """One line: ``file:line: field.path: what is wrong`` (first error, plus a count of the rest).

    A field written by ``--set`` is blamed on that argument (``--set 'method.rnak=4': ...``), not on a
    line of the file it never appeared in."""
    errors = err.errors()
    # an unknown key first: a misspelt field also makes the field it meant "missing", and the typo is the cause
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = _field_loc(first["loc"], data)
    path = ".".join(str(p) for p in loc) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        known = _fields_at(loc, data)
        typed = str(loc[-1]) if loc else ""
        close = [k for k in known if k.lower() == typed.lower()] or difflib.get_close_matches(
            typed, known, n=1
        )
        msg = "unknown field" + (f" (did you mean '{close[0]}'?)" if close else "")
        if known and not close:
            msg += f" (known: {', '.join(known)})"
    elif first["type"] == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    line = _line_of(node, loc)
    where = f"{file}:{line}" if line else file
    blamed = _override_for(loc, overrides, node) if loc else None
    if blamed is not None:
        where = f"--set {blamed!r}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {path}: {msg}{more}"


def _coerce(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError:  # not YAML (an unclosed '[', '!!float abc', ...): the text itself
        return text


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...], file: str = "--set") -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to the raw recipe mapping."""
    data = copy.deepcopy(data)  # YAML gives dates, bytes and sets too, which JSON cannot copy
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set method.rank=4")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise RecipeError(f"--set {item!r}: empty part in key '{key}'")
        cur: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = cur.get(part) if isinstance(cur, dict) else None
            if isinstance(nxt, str) and part in ("model", "target", "general"):
                nxt = {"id": nxt} if part == "model" else {"source": nxt}
                cur[part] = nxt
            if nxt is None:
                nxt = {}
                cur[part] = nxt
            if not isinstance(nxt, dict):
                raise RecipeError(f"--set {item!r}: '{'.'.join(parts[: i + 1])}' is not a mapping")
            cur = nxt
        cur[parts[-1]] = _coerce(value)
    return data


def parse_recipe(text: str, file: str = "<recipe>", overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Parse and validate recipe YAML text. Raises RecipeError with a one-line message."""
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{where}: not valid YAML: {problem}") from None
    if data is None:
        raise RecipeError(f"{file}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{file}: a recipe must be a mapping of fields (name, model, method, ...)")
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_validation_error(e, file, node, data, overrides)) from None


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read and validate a recipe file or packaged recipe name (no model is loaded)."""
    p = resolve_recipe(path)  # a path on disk, else a packaged recipe by name
    if p.is_dir():
        raise RecipeError(f"{p}: is a directory, expected a recipe .yaml file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{p}: not a UTF-8 text file") from None
    return parse_recipe(text, str(p), overrides)
