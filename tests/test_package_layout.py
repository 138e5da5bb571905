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


# -- the Rust crates ------------------------------------------------------------------------------

RUST = Path(__file__).resolve().parents[1] / "rust"
# riverbed-server (the broker) still has request handlers and the broker state referring to each
# other; the engine's crates and the binding have none.
ACYCLIC_CRATES = ("riverbed-log", "riverbed-stream", "riverbed-kafka", "riverbed-python")


def _rust_graph(crate: str | Path) -> dict[str, set[str]]:
    """Which modules of `crate` each module refers to (`crate::m`, `use crate::{m, ...}`), its unit
    tests and comments left out."""
    import re

    src = crate if isinstance(crate, Path) else RUST / crate / "src"
    files = {p.stem: p for p in src.glob("*.rs") if p.stem not in ("lib", "main")}
    graph: dict[str, set[str]] = {}
    for m, p in files.items():
        text = p.read_text(encoding="utf-8").split("#[cfg(test)]")[0]
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
        deps = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", text))
        for group in re.findall(r"use crate::\{([^}]*)\}", text, re.S):
            deps |= set(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
        graph[m] = {d for d in deps if d in files and d != m}
    return graph


def test_the_rust_graph_sees_references(tmp_path):
    g = _rust_graph("riverbed-stream")
    assert "graph" in g["compile"] and "tasks" in g["driver"], g["compile"]
    # the control: a planted cycle through a grouped use and a path, past a comment and a test
    (tmp_path / "a.rs").write_text("use crate::{b, c::X};\n// crate::d\n")
    (tmp_path / "b.rs").write_text("fn f() { crate::a::g() }\n")
    (tmp_path / "c.rs").write_text("pub struct X;\n#[cfg(test)]\nmod t { use crate::a; }\n")
    (tmp_path / "d.rs").write_text("")
    g = _rust_graph(tmp_path)
    assert g == {"a": {"b", "c"}, "b": {"a"}, "c": set(), "d": set()}
    assert _cycle(g) == ["a", "b", "a"]


def test_the_engine_crates_have_no_module_cycle():
    for crate in ACYCLIC_CRATES:
        g = _rust_graph(crate)
        assert len(g) > 5, crate
        assert _cycle(g) is None, f"{crate}: module cycle {' -> '.join(_cycle(g) or [])}"
