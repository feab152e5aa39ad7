"""No import circles in the package: the graph of which pipeline module imports which, read from
the source with `ast` (imports inside functions count too: they only put a circle off until the
function runs), must be acyclic; and every name imported from a pipeline module exists there."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> list[tuple[str, str | None]]:
    """(module, name) for each import of the package in the file, at any depth; name is None
    for `import pipeline.x`. `from pipeline import store` is (pipeline.store, None) when
    store is a module of the package."""
    package = root.name
    known = {module_name(p, root) for p in root.rglob("*.py")}
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.split(".")[0] == package]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != package:
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule, None) if submodule in known else (node.module, alias.name))
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    return {module_name(path, root): {module for module, _ in imports_of(path, root)} - {module_name(path, root)}
            for path in sorted(root.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports (its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_package_has_no_import_circle():
    graph = import_graph(PACKAGE)
    # The graph holds imports made inside functions too (these two are).
    assert "pipeline.metrics" in graph["pipeline.train"] and "pipeline.train" in graph["pipeline.evaluate"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_through_a_function_level_import_is_found(tmp_path):
    # The circle this package had: summarise imported evaluate at the top, evaluate imported
    # summarise inside a function.
    package = tmp_path / "pipeline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "summarise.py").write_text("from pipeline.evaluate import unsupported_facts\n")
    (package / "evaluate.py").write_text("def unsupported_facts():\n    from pipeline import summarise\n")
    (package / "train.py").write_text("from pipeline import evaluate\n")
    assert find_cycle(import_graph(package)) == ["pipeline.evaluate", "pipeline.summarise", "pipeline.evaluate"]


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p, PACKAGE))
def test_each_module_imports_and_every_name_it_imports_from_the_package_exists(path):
    importlib.import_module(module_name(path, PACKAGE))
    for module, name in imports_of(path, PACKAGE):
        imported = importlib.import_module(module)
        assert name is None or hasattr(imported, name), f"{module_name(path, PACKAGE)} imports {name} from {module}"
