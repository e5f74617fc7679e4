"""The shape the code keeps (issue 16): short functions, a generic card and pipeline, no import cycles.

Read with ``ast`` from the source files, so these checks cost milliseconds and cannot be fooled by what
happens to be imported already.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from editkit.methods import method_names

PKG = Path(__file__).resolve().parents[1] / "editkit"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 450
MAX_FLAT_MODULES = 10  # modules directly in editkit/: the rest sit in folders named for the data flow

#: function-local imports of editkit modules that are deliberate, with the reason: whole files (a key ending
#: in "/" is a folder: every file under it)...
LAZY_IMPORTS = {
    "editkit/__init__.py": "`import editkit` stays fast: the package API is resolved on first use",
    "editkit/cli/": "each subcommand imports what it runs, so `editkit --help` starts in a blink",
}
#: ... and single (file, module) pairs: optional heavy dependencies only
LAZY_PAIRS = {
    ("editkit/run/pipeline.py", "editkit.export.gguf_file"): "the gguf package only with export.gguf",
    ("editkit/run/stages.py", "editkit.export.gguf_file"): "the gguf package only with export.gguf",
    ("editkit/export/reexport.py", "editkit.export.gguf_file"): "the gguf package only with --gguf",
}


def _listed(path: str, table: dict[str, str]) -> bool:
    """Whether ``path`` is in ``table`` by name, or under one of its folders (keys ending in "/")."""
    return path in table or any(k.endswith("/") and path.startswith(k) for k in table)


def _modules() -> dict[str, ast.Module]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent)
        name = ".".join(rel.with_suffix("").parts)
        out[name.removesuffix(".__init__")] = ast.parse(p.read_text(encoding="utf-8"), str(rel))
    return out


def _functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_longer_than_80_lines():
    long = [
        f"{name}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
        for name, tree in _modules().items()
        for fn in _functions(tree)
        if fn.end_lineno - fn.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_no_module_longer_than_450_lines():
    tui = PKG.parent / "tui"
    long = [
        f"{p.relative_to(PKG.parent)} ({n} lines)"
        for p in sorted([*PKG.rglob("*.py"), *tui.rglob("*.py")])
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert long == []


def test_the_folders_show_the_data_flow():
    """At most 10 modules directly in editkit/; every stage of the data flow is a folder (issue 25)."""
    flat = sorted(p.name for p in PKG.glob("*.py"))
    assert len(flat) <= MAX_FLAT_MODULES, flat
    folders = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert {
        "spec",
        "model",
        "data",
        "localize",
        "methods",
        "edit",
        "eval",
        "export",
        "publish",
        "run",
        "cli",
    } <= folders
    # refusal-shared code: methods/refusal (the edit), eval/refusal (rates)
    assert not (PKG / "refusal").exists()


def test_card_is_a_generic_template():
    assert len((PKG / "publish/card.py").read_text().splitlines()) <= 400
    for f in (
        "publish/card.py",
        "publish/card_meta.py",
        "publish/card_sections.py",
        "publish/card_release.py",
        "run/pipeline.py",
        "run/stages.py",
    ):
        text = (PKG / f).read_text()
        for name in method_names():
            for quoted in (f'"{name}"', f"'{name}'", f"`{name}`"):
                assert quoted not in text, f"{f} names method {name}"


def _path(name: str) -> str:
    folder = PKG.parent / name.replace(".", "/")
    return name.replace(".", "/") + ("/__init__.py" if folder.is_dir() else ".py")


def _imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """editkit modules ``name`` imports: at module level, in if/try blocks and inside functions and classes
    (a function-local import is a dependency all the same), absolute and relative. Only the deliberate lazy
    imports above (``LAZY_IMPORTS`` files, ``LAZY_PAIRS``) are left out."""
    out: set[str] = set()
    path = _path(name)
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    top = {
        id(n)
        for stmt in tree.body
        if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef))
        for n in ast.walk(stmt)
    }
    for sub in ast.walk(tree):
        if _listed(path, LAZY_IMPORTS) and id(sub) not in top:
            continue
        if isinstance(sub, ast.Import):
            found = {a.name for a in sub.names}
        elif isinstance(sub, ast.ImportFrom):
            base = sub.module or ""
            if sub.level:
                base = ".".join(
                    pkg.split(".")[: len(pkg.split(".")) - sub.level + 1] + ([base] if base else [])
                )
            found = {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in sub.names}
        else:
            continue
        out |= {m for m in found if m in known and (path, m) not in LAZY_PAIRS}
    return out - {name}


def test_no_import_cycles():
    mods = _modules()
    graph = {name: _imports(name, tree, set(mods)) for name, tree in mods.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_function_local_imports_only_where_deliberate():
    local = []
    for name, tree in _modules().items():
        path = name.replace(".", "/") + (
            ".py" if not (PKG.parent / name.replace(".", "/")).is_dir() else "/__init__.py"
        )
        if _listed(path, LAZY_IMPORTS):
            continue
        for fn in _functions(tree):
            for node in ast.walk(fn):
                mod = node.module if isinstance(node, ast.ImportFrom) else None
                if mod and mod.startswith("editkit") and (path, mod) not in LAZY_PAIRS:
                    local.append(f"{path}:{node.lineno} {mod}")
    assert local == []


#: function-local standard-library imports that stay local, with the reason (everything else at the top)
LAZY_STDLIB = {
    "editkit/cli/": "each subcommand imports what it runs, so `editkit --help` starts in a blink",
    "editkit/run/pipeline.py": "signal/threading only for the SIGTERM handler of a running apply",
    "editkit/eval/refusal/judge.py": "json/importlib only when a judge model is given by id",
}


def test_standard_library_imported_at_the_top():
    stdlib = set(sys.stdlib_module_names)
    local = []
    for name, tree in _modules().items():
        path = name.replace(".", "/") + (
            ".py" if not (PKG.parent / name.replace(".", "/")).is_dir() else "/__init__.py"
        )
        if _listed(path, LAZY_STDLIB):
            continue
        for fn in _functions(tree):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    mods = [node.module or ""]
                else:
                    continue
                local += [f"{path}:{node.lineno} {m}" for m in mods if m.split(".")[0] in stdlib]
    assert local == []


def test_validating_a_recipe_imports_no_fit_code():
    """The spec apart from the runtime (as PEFT keeps a config apart from its tuner): reading and validating a
    recipe of every method imports each method's ``params`` module, never its ``fit``."""
    code = (
        "import sys\n"
        "from editkit.methods.registry import method_names\n"
        "from editkit.spec.recipe import parse_recipe\n"
        "for m in method_names():\n"
        "    parse_recipe(f'name: x\\nmodel: demo\\nmethod: {{name: {m}}}\\ndata: {{target: moral}}\\n')\n"
        "print(sorted(n for n in sys.modules if n.startswith('editkit.methods.') and n.endswith('.fit')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_export_is_last_among_the_models_users():
    """Export merges the edit into the loaded model in place (no copy of a model that may be 4 GiB): so no
    stage after it may read the model. Checked on the source of every stage that follows it in STAGES."""
    import inspect
    import textwrap

    from editkit.run.stages import STAGES

    names = [s.name for s in STAGES]
    after = STAGES[names.index("export") + 1 :]
    assert [s.name for s in after] == ["card", "push"]
    for stage in after:
        tree = ast.parse(textwrap.dedent(inspect.getsource(stage.run)))
        used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not used & {"model", "ctx", "loaded", "edit", "control"}, (stage.name, used)


def _without_renamed_events(text: str) -> str:
    """A module's text without its ``RENAMED_EVENTS`` table (the monitor's event types of older runs: the
    paraphrase families were a stage's ``robustness`` event before they were a check's ``families``)."""
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] == [
            "RENAMED_EVENTS"
        ]:
            return text.replace(ast.get_source_segment(text, node.value), "{}")
    return text


def test_no_check_is_named_outside_its_own_folder():
    """A removal check is known by name only in ``editkit/eval/checks/`` (its module and the registry): the
    card, the pipeline, the CLI and the TUI iterate over ``CHECKS``."""
    from editkit.eval.checks import CHECKS

    checks_dir = PKG / "eval" / "checks"
    found = []
    for p in sorted([*PKG.rglob("*.py"), *(PKG.parent / "tui").rglob("*.py")]):
        if checks_dir in p.parents:
            continue
        text = _without_renamed_events(p.read_text(encoding="utf-8"))
        found += [
            f"{p.relative_to(PKG.parent)} names {n}" for n in CHECKS for q in "\"'`" if f"{q}{n}{q}" in text
        ]
    assert found == []


#: suite parts whose name is also a recipe data role (``data.target``, ``data.heldout``): the name there means
#: the data, which methods and loaders read too; the part's metrics and fields are still checked
DATA_ROLES = {"target", "heldout"}
#: (file, string) where a part's word means something else: a comparison edit's record says whether it was
#: evaluated with the method's generations (``eval.comparison_generations``), under a key older than the part
ELSEWHERE = {("editkit/run/stages.py", "generations"), ("editkit/publish/card_sections.py", "generations")}


def _strings(tree: ast.Module):
    """Every string constant of a module but the names listed in ``__all__`` (function names, not evaluations)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            skip |= {id(c) for c in ast.walk(node.value)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def test_no_suite_part_is_named_outside_its_own_folder():
    """A part of the per-phase suite — its name, its metrics, its recipe fields — is known only in
    ``editkit/eval/parts/`` (its module and the registry): the recipe schema, the data loader, the preflight,
    the card, the model-index and ``editkit eval`` iterate over ``PARTS``."""
    import re

    from editkit.eval.parts import PARTS

    names = {p.name for p in PARTS.values() if p.name not in DATA_ROLES}
    names |= {k for p in PARTS.values() for k in [*p.metrics, *p.fields]}
    fields = {k for p in PARTS.values() for k in p.fields}
    quoted = re.compile(r"(?:^|[`'\"])(" + "|".join(map(re.escape, sorted(names))) + r")(?:$|[`'\"])")
    dotted = re.compile(r"\beval\.(" + "|".join(map(re.escape, sorted(fields))) + r")\b")
    parts_dir = PKG / "eval" / "parts"
    found = []
    for p in sorted([*PKG.rglob("*.py"), *(PKG.parent / "tui").rglob("*.py")]):
        if parts_dir in p.parents:
            continue
        for s in _strings(ast.parse(p.read_text(encoding="utf-8"))):
            rel = p.relative_to(PKG.parent).as_posix()
            found += [
                f"{rel} names {m}" for m in quoted.findall(s) + dotted.findall(s) if (rel, s) not in ELSEWHERE
            ]
    assert names >= {"blimp", "blimp_accuracy", "drift_kl", "perplexity", "general_capability_score"}
    assert names >= {"generations", "generation_tokens"}
    assert found == []
