"""The package's dependencies point one way: no module imports one in a layer above its own,
and no import cycle exists among etcd_recovery's modules.

Every ``import`` and ``from ... import`` counts, wherever it is written: at the top of a
module, inside a function (a deferred import is still a dependency, only a later one), and
under ``if TYPE_CHECKING:`` (a type is part of the interface). Two things are not edges:
- a module's own package ``__init__``, which Python runs before any module of the package
  (``from . import config`` depends on ``runtimes.config``, not on ``runtimes``' ``__init__``);
- the generated gRPC/protobuf code under ``etcd_recovery/proto``, which is data to everything.

Within a layer, modules may import each other in any direction that makes no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "etcd_recovery"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

# Lowest first. A module belongs to the layer of the longest pattern naming it or a package
# that holds it ("transport" holds every transport.* module; "transport.factory" overrides).
# Pure modules sit below the ones that reach hosts: the planner needs values (an inspect
# report, an inventory), never inspect or the session. The renderers sit below the executor:
# they show a plan, a report and a run's results, and need none of the machinery that makes
# them.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("", "errors", "versions", "retry", "fanout", "memory")),
    ("values and formats", ("formats", "model", "results", "hostchecks", "etcdflags",
                            "etcdlog", "actions", "conditions", "choose")),
    ("transport", ("transport", "processes")),
    ("inventory and hosts", ("inventory", "importer", "runtimes", "crosscheck",
                             "etcdflags_sh", "live", "watch", "transport.factory")),
    ("plan", ("plan", "methods", "planid", "journal")),
    ("session", ("session",)),
    ("reading the cluster", ("inspect", "discover")),
    ("the plan workflow", ("runs",)),
    ("render", ("render", "runbook")),
    ("execute and verify", ("executor", "stepchecks", "verify", "doctor")),
    ("lab", ("lab",)),
    ("cli", ("cli",)),
]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] == "proto":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path   # "" is the package itself
    return found


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute name (relative to the package, "" for the package) ``node`` imports from,
    or None when it is outside etcd_recovery."""
    if node.level == 0:
        name = node.module or ""
        if name == PACKAGE:
            return ""
        if not name.startswith(PACKAGE + "."):
            return None
        return name[len(PACKAGE) + 1:]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    package = [p for p in package if p]
    if node.level > 1:
        package = package[:len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def _imports(module: str, path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    yield ""
                elif alias.name.startswith(PACKAGE + "."):
                    yield alias.name[len(PACKAGE) + 1:]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            if base is None:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                # ``from pkg import mod`` depends on the module; ``from mod import name``
                # on ``mod``.
                yield sub if sub in MODULES else base


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        deps = set()
        for dep in _imports(module, path):
            if dep.split(".")[0] == "proto":
                continue
            while dep not in MODULES:          # a name below a module: the module
                dep = dep.rpartition(".")[0]
            is_ancestor = dep == "" or module == dep or module.startswith(dep + ".")
            if not is_ancestor:
                deps.add(dep)
        graph[module] = deps
    return graph


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None   # (pattern length, layer)
    for index, (_, patterns) in enumerate(LAYERS):
        for p in patterns:
            if p == "" and module == "" or p and (module == p or module.startswith(p + ".")):
                if best is None or len(p) > best[0]:
                    best = (len(p), index)
    assert best is not None, f"{module or PACKAGE} is in no layer: add it to LAYERS"
    return best[1]


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_one_above_it() -> None:
    graph = _graph()
    wrong = [f"{PACKAGE}.{m} ({LAYERS[layer_of(m)][0]}) imports {PACKAGE}.{d} "
             f"({LAYERS[layer_of(d)][0]})"
             for m, deps in sorted(graph.items()) for d in sorted(deps)
             if layer_of(d) > layer_of(m)]
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and any module
    importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
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
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle() -> None:
    assert _cycles(_graph()) == []


def test_the_checker_sees_function_level_imports_and_cycles() -> None:
    # executor imports retry at the top; cli imports executor inside a command.
    graph = _graph()
    assert "retry" in graph["executor"]
    assert "executor" in graph["cli"]
    assert "runtimes.base" in graph["runtimes.static_pod"]
    assert "runtimes.config" in graph["runtimes.base"]        # ``from . import config``
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]]
