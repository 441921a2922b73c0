"""Inside s3_checkpoint_io, a sub-package imports only the ones below it, and no import goes in a circle.

Read from the sources (module-level imports; an import inside a function is a deliberate lazy one),
so it needs neither torch nor Lightning installed. docs/architecture.md draws the same order.
"""

from __future__ import annotations

import ast
import pathlib

SOURCE = pathlib.Path(__file__).resolve().parents[2] / "packages/s3-checkpoint-io/src"
PACKAGE = "s3_checkpoint_io"
TOP = "(package)"

# each part of the package, and the parts it may import (module-level)
MAY_IMPORT: dict[str, set[str]] = {
    TOP: {"errors"},
    "errors": set(),
    "sent_errors": set(),
    "removal": set(),
    "one_rank": {"sent_errors"},
    "rank_zero": {"one_rank", "sent_errors", "errors"},
    "node_reads": {"engine", "errors", "one_rank", "sent_errors"},
    "engine": {"errors"},
    "background": {"engine", "errors", "sent_errors"},
    "dcp": {"errors", "one_rank", "sent_errors"},
    "convert": {"dcp", "engine", "errors"},
    "lightning": {"background", "engine", "errors", "node_reads", "rank_zero", "removal", "sent_errors"},
    "strategies": {"background", "dcp", "engine", "errors", "lightning", "rank_zero", "removal"},
    "cli_plugin": {"convert", "dcp", "engine", "errors", "lightning"},
    "fabric_strategies": {"strategies"},
}


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in (SOURCE / PACKAGE).rglob("*.py"):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph(known: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """Each module's module-level imports of the package's own modules."""
    graph = {}
    for name, path in known.items():
        imported = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
                children = [
                    f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known
                ]
                imported.update(children)
                if len(children) < len(node.names):
                    imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        graph[name] = {m for m in imported if m in known and m != name}
    return graph


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else TOP


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_every_part_of_the_package_has_a_place_in_the_order() -> None:
    assert {part(m) for m in modules()} == set(MAY_IMPORT)


def test_no_part_imports_one_above_it() -> None:
    graph = import_graph(modules())
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if part(target) != part(module) and part(target) not in MAY_IMPORT[part(module)]
    )
    assert upward == []


def test_no_import_goes_in_a_circle() -> None:
    assert cycles(import_graph(modules())) == []


def test_the_checks_see_a_circle_and_an_upward_import() -> None:
    graph = {"p.engine.a": {"p.lightning.b"}, "p.lightning.b": {"p.engine.a"}}
    assert cycles(graph) == [["p.engine.a", "p.lightning.b", "p.engine.a"]]
    assert part("p.lightning.b") not in MAY_IMPORT[part("p.engine.a")]
