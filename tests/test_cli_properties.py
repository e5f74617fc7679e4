"""Property tests of the CLI's bad-input contract (issue 28, item 8), with hypothesis.

Over random ``--set`` overrides (real recipe fields, misspellings and made-up keys; values of wrong types,
numbers, strings, nested YAML, YAML-special strings): never a traceback, exit code 0 or 2, on failure one
line per problem naming the file or the ``--set`` argument, and nothing written. ``validate`` never
writes; ``apply`` on a recipe that ``validate`` rejects must exit 2 in one line before any run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from typer.testing import CliRunner

from editkit.cli.main import app
from editkit.methods import method_names, method_params_class
from editkit.run.preflight import NEEDS_THE_MODEL
from editkit.spec.recipe import Recipe
from tests.test_bad_input import TRIPLETS, _snapshot, good

#: hypothesis warns that the repr of these (large, sampled) strategies is long; it is, by design
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

SETTINGS = dict(
    deadline=None,
    derandomize=True,  # the same examples on every run and machine (CI)
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field path of the recipe schema (sub-models walked), e.g. ``eval.max_items``."""
    out = []
    for name, field in model.model_fields.items():
        path = prefix + name
        out.append(path)
        for sub in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(sub, type) and issubclass(sub, BaseModel) and not prefix:
                out += _field_paths(sub, path + ".")
    return out


FIELDS = sorted(
    {p for p in _field_paths(Recipe) if p != "method"}
    | {f"method.{f}" for f in method_params_class("heads").model_fields}
    | {
        f"data.{k}.{f}"
        for k in ("target", "general")
        for f in ("source", "split", "subset", "limit", "columns")
    }
    | {"data.sets.harmful", "data.sets.harmful.source", "data.heldout", "data.target.columns.question"}
)

#: strings YAML reads as something else (null, booleans, floats, dates, tags, anchors, flow collections)
YAML_SPECIAL = [
    "",
    "~",
    "null",
    "Null",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "true",
    "False",
    ".inf",
    "-.inf",
    ".nan",
    "1e999",
    "-0",
    "0x1F",
    "0o17",
    "1_000",
    "12:30:00",
    "2026-01-01",
    "2026-13-45",
    "[1, 2",
    "{a: 1",
    "[[0, 1], [1, 2]]",
    "{source: moral, limit: 0}",
    "[]",
    "{}",
    "- x",
    "a: b",
    ": ",
    "&a x",
    "*a",
    "!!binary aGVsbG8=",
    "!!python/object/apply:os.system ['touch PWNED']",
    "!!set {a, b}",
    "!!timestamp 2026-01-01",
    "!!float abc",
    "!!int 0x",
    "<<: {a: 1}",
    "'",
    '"',
    '"a\\0b"',
    '"\\u0000"',
    '"line\\nbreak"',
    "|\n  block",
    ">",
    "%YAML 1.2",
    "---",
    "...",
    "@",
    "`",
    "#comment",
    "x # comment",
    "=",
    "a=b",
    "~/nope",
    "../../etc/passwd",
    "/dev/null",
    "demo",
    "moral",
    "auto",
    "builtin",
    "user/name",
    "a/b/c",
    "ÄÖÜ-ß",
    "\u202e",
    " ",
]


def _misspell(word: str, i: int, op: int) -> str:
    i %= len(word)
    if op == 0:
        return word[:i] + word[i + 1 :]  # drop a letter
    if op == 1 and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]  # swap two
    if op == 2:
        return word[:i] + "x" + word[i:]  # insert one
    return word.upper()


misspelled = st.builds(
    lambda path, i, op: ".".join([*path.split(".")[:-1], _misspell(path.split(".")[-1], i, op) or "x"]),
    st.sampled_from(FIELDS),
    st.integers(0, 30),
    st.integers(0, 3),
)
odd_keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["a..b", ".name", "name.", "model.id.x", "seed.x", "method.heads.0", "eval.max_items.x"]),
)
keys = st.one_of(
    st.sampled_from(FIELDS), st.sampled_from(FIELDS), st.sampled_from(FIELDS), misspelled, odd_keys
)

#: paths that exist or not, files and folders, of the right and wrong kinds
PATHS = [
    "./missing.jsonl",
    "/nonexistent/x.csv",
    "~/nope.parquet",
    "x.gguf",
    "/dev/null",
    "/dev/null.gguf",
    "/tmp",
    ".",
    "..",
    "/etc/hostname",
    "./words.txt",
]
plain = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=16),
)
nested = st.recursive(
    plain, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
values = st.one_of(
    st.sampled_from(YAML_SPECIAL),
    st.sampled_from(PATHS),
    st.integers(-3, 40).map(str),
    st.sampled_from(
        ["true", "false", "0.5", "2GB", "float16", "q8_0", "auto", "[[0, 1]]", "[[1, 3], [0, 0]]"]
    ),
    st.text(max_size=24),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    nested.map(lambda v: json.dumps(v)),
    nested.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
    st.sampled_from(method_names()),
)
overrides = st.lists(st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1, max_size=3)
#: now and then an argument without '=' (a malformed --set)
set_args = st.one_of(
    overrides, overrides, overrides, overrides.map(lambda o: [*o[:-1], o[-1].split("=", 1)[0]])
)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from tests.tiny import save_tiny

    root = tmp_path_factory.mktemp("props")
    save_tiny("llama", root / "tiny")
    (root / "moral.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRIPLETS))
    recipe = root / "recipe.yaml"
    recipe.write_text(good(root) + "  control: false\n")
    return root, recipe


def _flat(args: list[str]) -> list[str]:
    return [a for s in args for a in ("--set", s)]


def _check_validate(output: str, exit_code: int, recipe: Path) -> list[str]:
    """The contract of `editkit validate` on one recipe; returns the error lines."""
    assert "Traceback" not in output, output
    assert exit_code in (0, 2), (exit_code, output)
    lines = output.splitlines()
    assert lines and lines[-1] == NEEDS_THE_MODEL, output  # the last line, and only once
    body = lines[:-1]
    if exit_code == 0:
        assert len(body) == 1 and body[0].startswith(f"✓ {recipe}: t (") and " hash " in body[0], output
        return []
    assert body, output
    for line in body:  # one line per problem, each naming the recipe file or the --set argument
        assert line.startswith((f"✗ {recipe}: ", f"✗ {recipe}:", "✗ --set ")), output
    return body


@settings(max_examples=400, **SETTINGS)
@given(args=set_args)
def test_validate_with_random_overrides(ws, args):
    root, recipe = ws
    before = _snapshot(root)
    result = CliRunner().invoke(app, ["validate", str(recipe), *_flat(args)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    _check_validate(result.output, result.exit_code, recipe)
    assert _snapshot(root) == before, "validate wrote something"


#: mappings whose keys are all fixed by the schema (data.sets and *.columns take any key)
PARENTS = ["", "model.", "method.", "data.", "eval.", "export.", "push.", "data.target.", "data.general."]
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True)


@settings(max_examples=150, **SETTINGS)
@given(parent=st.sampled_from(PARENTS), name=identifiers, value=values)
def test_unknown_key_is_named_exactly(ws, parent, name, value):
    """A --set of a key the schema does not have: the one error line blames that argument and that path."""
    root, recipe = ws
    key = parent + name
    if key in FIELDS:
        return
    arg = f"{key}={value}"
    result = CliRunner().invoke(app, ["validate", str(recipe), "--set", arg])
    errors = _check_validate(result.output, result.exit_code, recipe)
    assert result.exit_code == 2 and len(errors) == 1, result.output
    # (the one-line rule folds runs of whitespace, in the echoed argument too)
    assert errors[0].startswith(" ".join(f"✗ --set {arg!r}: {key}: unknown field".split())), (errors[0], arg)


def _set_in(data: dict, path: str, value: object) -> None:
    parts = path.split(".")
    cur = data
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = {"source": nxt} if part in ("target", "general") and isinstance(nxt, str) else {}
            cur[part] = nxt
        cur = nxt
    cur[parts[-1]] = value


@settings(max_examples=150, **SETTINGS)
@given(
    edits=st.lists(st.tuples(st.one_of(st.sampled_from(FIELDS), misspelled), values), min_size=1, max_size=3)
)
def test_validate_with_random_recipe_files(ws, tmp_path_factory, edits):
    """The same values written into the recipe file itself (raw YAML text, so YAML-special strings and
    broken structure reach the parser): one line per problem, naming the file."""
    root, recipe = ws
    data = yaml.safe_load(recipe.read_text())
    for i, (path, _) in enumerate(edits):
        _set_in(data, path, f"@@V{i}@@")
    text = yaml.safe_dump(data, sort_keys=False, width=1000)
    for i, (_, raw) in enumerate(edits):
        text = text.replace(f"'@@V{i}@@'", raw).replace(f"@@V{i}@@", raw)
    d = tmp_path_factory.mktemp("file")
    f = d / "r.yaml"
    f.write_text(text)
    before = _snapshot(root)
    result = CliRunner().invoke(app, ["validate", str(f)])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in (0, 2), result.output
    lines = result.output.splitlines()
    assert lines[-1] == NEEDS_THE_MODEL, result.output
    if result.exit_code == 0:
        assert len(lines) == 2 and lines[0].startswith(f"✓ {f}: "), result.output
    else:
        assert lines[:-1] and all(x.startswith(f"✗ {f}") for x in lines[:-1]), result.output
    assert sorted(p.name for p in d.iterdir()) == ["r.yaml"] and _snapshot(root) == before


@settings(max_examples=25, **SETTINGS)
@given(args=overrides)
def test_apply_refuses_what_validate_refuses(ws, args, tmp_path_factory):
    """Whatever validate rejects, apply rejects too: exit 2, one line, and no run directory."""
    root, recipe = ws
    checked = CliRunner().invoke(app, ["validate", str(recipe), *_flat(args)])
    if checked.exit_code == 0:
        return  # a valid recipe would run the whole pipeline: not this test's subject
    runs = tmp_path_factory.mktemp("runs")
    before = _snapshot(root)
    cwd = os.getcwd()
    os.chdir(runs)
    try:
        result = CliRunner().invoke(app, ["apply", str(recipe), "--runs", str(runs / "runs"), *_flat(args)])
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (args, result.output)
    assert len(result.output.splitlines()) == 1 and result.output.startswith("error: "), result.output
    assert list(runs.iterdir()) == [], "apply wrote something"
    assert _snapshot(root) == before


#: a handful of real processes (the installed console script, its own exit code and streams)
SUBPROCESS_CASES = [
    (["model.id=!!python/object/apply:os.system ['touch PWNED']"], 2),
    (['model.id="a\\0b"'], 2),
    (["eval.max_items=.nan", "method.scale=1e999"], 2),
    (["data.target.limit=0"], 2),
    (["eval.max_items=7"], 0),
]


@pytest.mark.parametrize(("args", "code"), SUBPROCESS_CASES)
def test_installed_console_script(ws, tmp_path, args, code):
    root, recipe = ws
    exe = Path(sys.executable).with_name("editkit")
    before = _snapshot(root)
    res = subprocess.run(
        [str(exe), "validate", str(recipe), *_flat(args)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
        cwd=tmp_path,
    )
    assert res.returncode == code, res.stderr
    _check_validate(res.stderr + res.stdout, res.returncode, recipe)
    assert list(tmp_path.iterdir()) == [], "something was written (or the YAML tag ran a command)"
    assert _snapshot(root) == before


NAME_RULE = "must be 1-100 characters of letters, digits, '-', '_' or '.'"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("[/]", "Input should be a valid string"),  # YAML: the list ['/']
        ("[#]", NAME_RULE),  # not YAML: the text itself
        ("[bold]x", NAME_RULE),
        ("a[/red]b", NAME_RULE),
    ],
)
def test_user_text_is_printed_as_text_not_markup(ws, value, problem):
    """Found by the properties above: validate printed its error lines through rich markup, so the echoed
    ``--set 'A=[#]'`` lost its ``[#]`` and ``[/]`` raised MarkupError (a traceback, exit code 1)."""
    root, recipe = ws
    arg = f"name={value}"
    result = CliRunner().invoke(app, ["validate", str(recipe), "--set", arg])
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.output.splitlines() == [f"✗ --set {arg!r}: name: {problem}", NEEDS_THE_MODEL]


def _validate_file(tmp_path: Path, extra: str, *args: str) -> list[str]:
    f = tmp_path / "r.yaml"
    f.write_text(f"name: t\nmodel: demo\nmethod: {{name: heads, heads: [[0, 1]]}}\n{extra}")
    result = CliRunner().invoke(app, ["validate", str(f), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.output.splitlines()[-1] == NEEDS_THE_MODEL
    return [line.replace(str(f), "R") for line in result.output.splitlines()[:-1]]


#: what the properties found in editkit.spec.recipe (each was a traceback or a wrong line before the fix)
FOUND = [
    # a scalar YAML cannot construct: ValueError from PyYAML's constructor, a traceback
    (
        "description: 2026-02-30\n",
        [],
        "✗ R:4: not valid YAML: '2026-02-30' is not a valid timestamp (day is out of range for month)",
    ),
    (
        "seed: !!int 0x\n",
        [],
        "✗ R:4: not valid YAML: '0x' is not a valid int (invalid literal for int() with base 16: '')",
    ),
    ("seed: !!bool maybe\n", [], "✗ R:4: not valid YAML: 'maybe' is not a valid bool ('maybe')"),
    # a date in the file plus any --set: the JSON deep copy raised TypeError
    ("description: 2026-01-01\n", ["--set", "seed=1"], "✗ R:4: description: Input should be a valid string"),
    # --set values PyYAML cannot construct are the text itself, as unparsable YAML already was
    ("", ["--set", "description=!!float abc"], "✓ R: t (heads on demo), hash "),
    # a key spelt in capitals was dropped from the path as if it were a pydantic class name
    (
        "",
        ["--set", "method.NAME=1"],
        "✗ --set 'method.NAME=1': method.NAME: unknown field (did you mean 'name'?)",
    ),
    # union member tags leaked into the path (eval.blimp.str, export.gguf.literal[...])
    (
        "",
        ["--set", "eval.blimp=[1]"],
        "✗ --set 'eval.blimp=[1]': eval.blimp: Input should be a valid string (and 1 more problem)",
    ),
    # a mapping made by --set was blamed on a line of the file that never had it
    (
        "",
        ["--set", "data.general.limit=5"],
        "✗ --set 'data.general.limit=5': data.general.source: required field is missing",
    ),
    # a misspelt key is reported before the "missing" field it was meant to be
    (
        "data:\n  general: {sorce: x}\n",
        [],
        "✗ R:5: data.general.sorce: unknown field (did you mean 'source'?) (and 1 more problem)",
    ),
]

FOUND_IDS = [
    "bad-timestamp",
    "bad-int-tag",
    "bad-bool-tag",
    "date-plus-set",
    "set-unconstructable",
    "capital-key",
    "union-tag-in-path",
    "set-made-mapping",
    "typo-before-missing",
]


@pytest.mark.parametrize(("extra", "args", "line"), FOUND, ids=FOUND_IDS)
def test_found_by_the_properties(tmp_path, extra, args, line):
    lines = _validate_file(tmp_path, extra, *args)
    assert len(lines) == 1, lines
    assert lines[0].startswith(line) if line.startswith("✓") else lines[0] == line, lines
