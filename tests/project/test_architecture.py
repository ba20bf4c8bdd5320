"""The package layout holds: lower layers never import higher ones, no import cycles,
no file over 600 lines, and no function over 80 lines without a sentence saying why.

Imports are read from the source (every ``import`` statement, at module level or inside
a function), so a cycle hidden behind a function-level import counts as one.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "electra"
# Lowest first: a module may import its own layer and the ones before it.
LAYERS = ("core", "data", "pretraining", "tasks", "evaluation", "registry", "pipeline", "cli")
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
# A longer function says why in a comment holding this phrase, in its first lines.
LONG_MARK = "# Long because"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The ``electra`` modules ``path`` imports (``from electra.x import y`` counts as
    ``electra.x.y`` when that is a module, else as ``electra.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found.update(n for n in names if n == "electra" or n.startswith("electra."))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_lives_in_a_layer():
    stray = [m for m in _modules() if m != "electra" and _layer(m) is None]
    assert not stray, f"modules outside the layer packages {LAYERS}: {stray}"


def test_lower_layers_never_import_higher_ones():
    modules = _modules()
    known = set(modules)
    violations = []
    for name, path in modules.items():
        layer = _layer(name)
        if layer is None:
            continue
        for target in _imports(path, known):
            target_layer = _layer(target)
            if target_layer and LAYERS.index(target_layer) > LAYERS.index(layer):
                violations.append(f"{name} ({layer}) imports {target} ({target_layer})")
    assert not violations, "\n".join(violations)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each one cycle or more."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    modules = _modules()
    known = set(modules)
    # A module importing its own package's __init__ counts too: that __init__ imports it back.
    graph = {name: {t for t in _imports(path, known) if t in known and t != name}
             for name, path in modules.items()}
    assert _cycles(graph) == []


def _code_files() -> list[Path]:
    return sorted(p for folder in ("electra", "flows", "bench") for p in (ROOT / folder).rglob("*.py"))


def test_no_file_over_600_lines():
    long_files = {str(p.relative_to(ROOT)): n for p in _code_files()
                  if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}
    assert not long_files, f"files over {MAX_FILE_LINES} lines: {long_files}"


def test_long_functions_say_why():
    unexplained = []
    for path in _code_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                head = lines[node.lineno - 1: node.lineno + 15]
                if length > MAX_FUNCTION_LINES and not any(LONG_MARK in line for line in head):
                    unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not unexplained, (f"functions over {MAX_FUNCTION_LINES} lines without a '{LONG_MARK} ...' "
                             "comment near their start:\n" + "\n".join(unexplained))
