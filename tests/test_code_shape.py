"""The shape the code keeps (issue 16): short functions, a generic card and pipeline, no import cycles.

Read with ``ast`` from the source files, so these checks cost milliseconds and cannot be fooled by what
happens to be imported already.
"""

from __future__ import annotations

import ast
from pathlib import Path

from editkit.methods import method_names

PKG = Path(__file__).resolve().parents[1] / "editkit"
MAX_FUNCTION_LINES = 80

#: function-local imports of editkit modules that are deliberate, with the reason: whole files...
LAZY_IMPORTS = {
    "editkit/__init__.py": "`import editkit` stays fast: the package API is resolved on first use",
    "editkit/cli.py": "each subcommand imports what it runs, so `editkit --help` starts in a blink",
}
#: ... and single (file, module) pairs
LAZY_PAIRS = {
    (
        "editkit/models.py",
        "editkit.recipe",
    ): "recipe -> methods -> sft -> models: ModelSpec only for a string",
    ("editkit/recipe.py", "editkit.catalog"): "catalog reads recipes: packaged recipe names resolve on use",
    ("editkit/catalog.py", "editkit.recipe"): "(the other side of the same)",
    ("editkit/catalog.py", "editkit.methods"): "(the other side of the same)",
    ("editkit/export.py", "editkit.streaming"): "streaming writes through export.atomic_dir",
    (
        "editkit/refusal/judge.py",
        "editkit.recipe",
    ): "recipe -> methods -> refusal metrics -> judge: ModelSpec only for a judge given by id",
    ("editkit/pipeline.py", "editkit.gguf_export"): "the gguf package only with export.gguf",
    ("editkit/reexport.py", "editkit.gguf_export"): "the gguf package only with --gguf",
}


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


def test_card_is_a_generic_template():
    assert len((PKG / "card.py").read_text().splitlines()) <= 400
    for f in ("card.py", "card_meta.py", "card_sections.py", "pipeline.py"):
        text = (PKG / f).read_text()
        for name in method_names():
            for quoted in (f'"{name}"', f"'{name}'", f"`{name}`"):
                assert quoted not in text, f"{f} names method {name}"


def _top_level_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """editkit modules imported when ``name`` is imported (module level, including if/try blocks)."""
    out: set[str] = set()
    pkg = name if (PKG.parent / name.replace(".", "/") / "__init__.py").exists() else name.rpartition(".")[0]
    for node in tree.body:
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(sub, ast.Import):
                out |= {a.name for a in sub.names if a.name in known}
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    base = ".".join(
                        pkg.split(".")[: len(pkg.split(".")) - sub.level + 1] + ([base] if base else [])
                    )
                for a in sub.names:
                    target = f"{base}.{a.name}"
                    out.add(target if target in known else base)
    return {m for m in out if m in known and m != name}


def test_no_import_cycles():
    mods = _modules()
    graph = {name: _top_level_imports(name, tree, set(mods)) for name, tree in mods.items()}
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
        if path in LAZY_IMPORTS:
            continue
        for fn in _functions(tree):
            for node in ast.walk(fn):
                mod = node.module if isinstance(node, ast.ImportFrom) else None
                if mod and mod.startswith("editkit") and (path, mod) not in LAZY_PAIRS:
                    local.append(f"{path}:{node.lineno} {mod}")
    assert local == []
