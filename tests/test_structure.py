"""The package's layering: no import cycle, function-level imports included."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "swin_flax"


def imports_of(path: Path) -> set[str]:
    """The swin_flax modules `path` imports anywhere in its body (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("swin_flax.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "swin_flax":  # from swin_flax import data, losses
                found |= {f"swin_flax.{a.name}" for a in node.names
                          if (PACKAGE / f"{a.name}.py").exists()}
            elif node.module.startswith("swin_flax."):
                found.add(node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {f"swin_flax.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: imports_of(path) & set(modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, trail + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_swin_flax_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_errors_imports_nothing_of_ours():
    assert import_graph()["swin_flax.errors"] == set()
