"""The Python facade's shape (issue 16): no import cycle among riverbed's modules, and the
pipeline builder knows topics only through the source/sink hand-over (riverbed._topic_io), not
by importing the log or the Kafka connector."""

from __future__ import annotations

import ast
from pathlib import Path

import riverbed

PACKAGE = Path(riverbed.__file__).parent


def _imports(path: Path) -> set[str]:
    """The riverbed modules `path` imports when it runs, late imports inside functions included,
    imports only for type checkers (under ``if TYPE_CHECKING:``) left out."""
    found: set[str] = set()

    class Visit(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            t = node.test
            if (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
                isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
            ):
                for n in node.orelse:
                    self.visit(n)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.split(".")[0] == "riverbed")

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level == 0 and node.module and node.module.split(".")[0] == "riverbed":
                if node.module == "riverbed":  # from riverbed import x: x may be a module
                    found.update(f"riverbed.{a.name}" for a in node.names)
                else:
                    found.add(node.module)

    Visit().visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def _graph() -> dict[str, set[str]]:
    names = {p: ("riverbed" if p.stem == "__init__" else f"riverbed.{p.stem}") for p in PACKAGE.glob("*.py")}
    modules = set(names.values())
    return {m: {d for d in _imports(p) if d in modules and d != m} for p, m in names.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_the_graph_sees_imports_and_finds_a_cycle():
    """The control: the walker sees late imports and reports a planted cycle."""
    src = "def f():\n    from riverbed.log import Topic\n"
    tree_imports: set[str] = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom) and node.module:
            tree_imports.add(node.module)
    assert tree_imports == {"riverbed.log"}
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    graph = _graph()
    assert "riverbed.log" in graph["riverbed.kafka"], "kafka.py's import of log.py is seen"
    assert "riverbed.pipeline" in graph["riverbed.log"], "log.py's late import of pipeline.py is seen"


def test_no_module_of_the_package_imports_itself_in_a_circle():
    graph = _graph()
    assert len(graph) > 15
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_the_pipeline_builder_imports_neither_the_log_nor_the_kafka_connector():
    graph = _graph()
    assert not graph["riverbed.pipeline"] & {"riverbed.log", "riverbed.kafka", "riverbed.server"}
