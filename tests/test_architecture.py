"""The package layout's import rule (docs/ARCHITECTURE.md): a subpackage imports only from itself
and from subpackages of a lower layer; the top-level package holds constants only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import spkadv

PACKAGE = Path(spkadv.__file__).parent
# layer of each subpackage: lower layers never import higher ones, and two subpackages of the
# same layer never import each other
LAYERS = {
    "base": 0,
    "audio": 1,
    "data": 2,
    "encoders": 3,
    "core": 4,
    "evaluation": 5,
    "studies": 6,
    "report": 7,
    "run": 8,
    "cli": 8,
}
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _subpackage(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE).parts
    return rel[0] if len(rel) > 1 else None


def spkadv_imports(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import of spkadv in ``source``, at any depth; ``from spkadv
    import x`` counts as ``spkadv.x``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("spkadv")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "spkadv":
                found += [(node.lineno, f"spkadv.{a.name}") for a in node.names]
            elif node.module.startswith("spkadv."):
                found.append((node.lineno, node.module))
    return found


def rule_violations(package: str | None, imports: list[tuple[int, str]]) -> list[str]:
    """Why each import breaks the rule (empty when none does)."""
    bad = []
    for line, name in imports:
        parts = name.split(".")
        target = parts[1] if len(parts) > 1 else None
        if target not in LAYERS:  # spkadv itself or a constant such as SAMPLE_RATE
            continue
        if package is None:
            bad.append(f"line {line}: the top-level package imports {name}")
        elif target != package and LAYERS[target] >= LAYERS[package]:
            bad.append(
                f"line {line}: {package} (layer {LAYERS[package]}) imports {name} "
                f"(layer {LAYERS[target]})"
            )
    return bad


def test_rule_catches_an_upward_import():
    src = "def f():\n    from spkadv.core import protect\n"
    assert rule_violations("audio", spkadv_imports(src)) == [
        "line 2: audio (layer 1) imports spkadv.core (layer 4)"
    ]
    assert rule_violations("cli", spkadv_imports("from spkadv import run\n"))
    assert not rule_violations("cli", spkadv_imports("from spkadv.core import protect\n"))
    assert not rule_violations("core", spkadv_imports("from spkadv import SAMPLE_RATE\n"))


def test_every_subpackage_has_a_layer():
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert found == set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path):
    assert rule_violations(_subpackage(path), spkadv_imports(path.read_text())) == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_size(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines"


def _runtime_imports(source: str) -> set[str]:
    """Modules of spkadv imported at run time (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(source)
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for n in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("spkadv"):
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spkadv"))
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle of module imports found by a depth-first search (empty when acyclic)."""
    cycles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_cycle_search_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    names = {}
    for path in _modules():
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names[".".join(parts)] = path
    graph = {
        mod: {m for m in _runtime_imports(path.read_text()) if m in names and m != mod}
        for mod, path in names.items()
    }
    assert import_cycles(graph) == []
