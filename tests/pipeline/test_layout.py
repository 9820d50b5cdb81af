"""The package layout: no import cycles, no stage importing another stage, models/ pure.

Every import statement counts, function-level ones included (a lazy import still ties two
modules together); imports under `if TYPE_CHECKING:` do not run and are skipped.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "models", "evaluation")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported_names(tree: ast.AST) -> list[str]:
    """Every module an import statement names, `from a import b` as a.b and a."""
    names: list[str] = []
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        todo.extend(ast.iter_child_nodes(node))
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a package's __init__ is its own node)."""
    modules = all_modules()
    graph = {}
    for name, path in modules.items():
        targets = imported_names(ast.parse(path.read_text()))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_sees_a_cycle_and_none_in_a_chain():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imported_names_include_lazy_imports_and_skip_type_checking():
    tree = ast.parse("from a import b\ndef f():\n    import c.d\n"
                     "if TYPE_CHECKING:\n    import e\n")
    assert set(imported_names(tree)) == {"a", "a.b", "c.d"}


def test_no_import_cycle_in_the_project():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_stage_imports_another_stage():
    graph = import_graph()
    stages = {m for m in graph if m.startswith("pipeline.stages.")}
    assert len(stages) >= 8
    crossing = {m: sorted(graph[m] & stages) for m in stages if graph[m] & stages}
    assert not crossing, f"stage modules importing other stage modules: {crossing}"


@pytest.mark.parametrize("banned", ["lightning", "mlflow", "gymnasium", "pipeline"])
def test_models_import_no_framework_io_or_pipeline(banned):
    for name, path in all_modules().items():
        if name.startswith("models"):
            roots = {n.split(".")[0] for n in imported_names(ast.parse(path.read_text()))}
            assert banned not in roots, f"{path} imports {banned}"
