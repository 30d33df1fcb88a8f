"""The package's shape, read from its source: layers, no import cycles, no borrowed privates.

Every ``import`` in ``stomp_cluster/`` counts, at module level or inside a function (only
``if TYPE_CHECKING:`` blocks are left out: they never run). The layers are those of
``docs/topics/architecture.rst``; an import may point to its own layer or a lower one.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stomp_cluster"

#: Lowest first. A module belongs to the first entry that is it or one of its packages.
LAYERS: list[tuple[str, ...]] = [
    # The package's face (its names are imported lazily, at use), plain helpers and the
    # sans-I/O protocol core: the standard library only.
    ("stomp_cluster", "stomp_cluster.typing", "stomp_cluster._lazy", "stomp_cluster.protocol"),
    # Settings and the vocabulary every layer shares.
    (
        "stomp_cluster.conf",
        "stomp_cluster.exceptions",
        "stomp_cluster.signals",
        "stomp_cluster.destinations",
        "stomp_cluster.messages",
        "stomp_cluster.users",
        "stomp_cluster.tokens",
        "stomp_cluster.caches",
        "stomp_cluster.throttle",
        "stomp_cluster.workers",
        "stomp_cluster.models",
        "stomp_cluster.migrations",
    ),
    # The Redis connection layer.
    ("stomp_cluster.redis_connection",),
    # The backends, each a contract with a memory and a Redis implementation.
    (
        "stomp_cluster.presence.base",
        "stomp_cluster.presence.memory",
        "stomp_cluster.presence.redis",
        "stomp_cluster.presence",
        "stomp_cluster.history",
        "stomp_cluster.transport",
    ),
    # The backend factory.
    ("stomp_cluster.backends",),
    # Routing: this process as a node, the send helpers and queries, and what a session
    # needs to act (auth, recovery, application handlers).
    (
        "stomp_cluster.node",
        "stomp_cluster.send",
        "stomp_cluster.queries",
        "stomp_cluster.recovery",
        "stomp_cluster.auth",
        "stomp_cluster.handlers",
        "stomp_cluster.accounts",
        "stomp_cluster.roster",
        "stomp_cluster.idempotency",
        "stomp_cluster.app_dispatch",
        "stomp_cluster.client_frames",
    ),
    # The consumer: the only WebSocket I/O; and the ASGI lifespan app beside it.
    (
        "stomp_cluster.consumer",
        "stomp_cluster.routing",
        "stomp_cluster.testing",
        "stomp_cluster.lifespan",
        "stomp_cluster.outbox",
    ),
    # The Django edges.
    (
        "stomp_cluster.admin",
        "stomp_cluster.operators",
        "stomp_cluster.checks",
        "stomp_cluster.apps",
        "stomp_cluster.management",
        "stomp_cluster.presence.receivers",
        "stomp_cluster.urls",
        "stomp_cluster.views",
        "stomp_cluster.metrics",
        "stomp_cluster.publish",
    ),
]


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    names: tuple[str, ...]
    line: int
    in_function: bool
    commented: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if MODULES[importer].name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(name: str) -> list[Import]:
    path = MODULES[name]
    source = path.read_text()
    lines = source.splitlines()
    found: list[Import] = []

    def commented(line: int, def_line: int | None) -> bool:
        # A comment on the import's line, or between the enclosing def and the import.
        start = def_line if def_line is not None else line
        return any("#" in text for text in lines[start - 1 : line])

    def visit(node: ast.AST, def_line: int | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub, def_line)
                continue
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, child.lineno)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(
                        Import(name, alias.name, (), child.lineno, def_line is not None, False)
                    )
            elif isinstance(child, ast.ImportFrom):
                target = resolve(name, child)
                names = tuple(alias.name for alias in child.names)
                found.append(
                    Import(
                        name,
                        target,
                        names,
                        child.lineno,
                        def_line is not None,
                        def_line is not None and commented(child.lineno, def_line),
                    )
                )
            else:
                visit(child, def_line)

    visit(ast.parse(source), None)
    return found


ALL_IMPORTS = [i for name in MODULES for i in imports_of(name)]


def internal_edges() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a name that is a submodule counts)."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in ALL_IMPORTS:
        if not imp.imported.startswith("stomp_cluster"):
            continue
        targets = {f"{imp.imported}.{n}" for n in imp.names} & MODULES.keys()
        if imp.imported in MODULES and len(targets) < len(imp.names):
            targets.add(imp.imported)
        edges[imp.importer] |= targets - {imp.importer}
    return edges


def layer_of(name: str) -> int:
    best: tuple[int, int] | None = None  # (length of the matching prefix, layer)
    for index, members in enumerate(LAYERS):
        for member in members:
            # The package itself holds only itself: its modules each have a layer.
            inside = member != "stomp_cluster" and name.startswith(member + ".")
            if (name == member or inside) and (best is None or len(member) > best[0]):
                best = (len(member), index)
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS and architecture.rst")
    return best[1]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return found


def test_the_graph_is_read():
    # Guard against a parser that sees nothing: known edges must be there.
    edges = internal_edges()
    assert "stomp_cluster.node" in edges["stomp_cluster.consumer"]
    assert "stomp_cluster.backends" in edges["stomp_cluster.send"]
    assert any(i.in_function for i in ALL_IMPORTS)


def test_no_import_cycles():
    assert cycles(internal_edges()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down_the_layers(name):
    mine = layer_of(name)
    upward = sorted(
        f"{target} (layer {layer_of(target)})"
        for target in internal_edges()[name]
        if layer_of(target) > mine
    )
    assert upward == [], f"{name} (layer {mine}) imports a higher layer"


def test_no_private_names_borrowed_across_packages():
    def package(module: str) -> str:
        return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]

    borrowed = [
        f"{imp.importer}:{imp.line} takes {name} from {imp.imported}"
        for imp in ALL_IMPORTS
        if imp.imported in MODULES
        for name in imp.names
        if name.startswith("_")
        and not name.startswith("__")
        and package(imp.importer) != package(imp.imported)
    ]
    assert borrowed == []


def test_function_level_imports_say_why():
    silent = [
        f"{imp.importer}:{imp.line} imports {imp.imported}"
        for imp in ALL_IMPORTS
        if imp.in_function and not imp.commented
    ]
    assert silent == []
