"""The house's one rule (docs/design/architecture.md, "Dependency direction"): imports run down
the floors, never up and never in a circle. Read from the code itself (every import statement,
module level or inside a function), so a new upward arrow or circle fails here."""

from __future__ import annotations

import ast
import os

from common import ROOT

#: Each package's floor, the ground first. A module may import its own package and packages on a
#: lower floor; ``coordinator`` and ``worker`` share a floor and must not import each other.
FLOORS = {"foundation": 0, "codec": 1, "storage": 1, "security": 1, "media": 2, "protos": 3,
          "rendezvous": 4, "coordinator": 5, "worker": 5, "pipeline": 6, "awslambda": 7, "excamera": 8}


def _modules() -> dict[str, str]:
    found = {}
    for package in FLOORS:
        for d, _, files in os.walk(os.path.join(ROOT, package)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    found[name.removesuffix(".__init__")] = path
    return found


def _imports(modules: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the project's modules it imports (a name resolved to the longest module)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in names:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name:
                    targets.add(t)
        edges[name] = targets
    return edges


def test_no_import_runs_up_a_floor_or_across_one():
    edges = _imports(_modules())
    wrong = sorted(f"{a} -> {b}" for a, bs in edges.items() for b in bs
                   if a.split(".")[0] != b.split(".")[0] and FLOORS[b.split(".")[0]] >= FLOORS[a.split(".")[0]])
    assert not wrong, wrong


def test_no_two_modules_import_each_other_even_through_others():
    edges = _imports(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:                       # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_rule_is_not_vacuous():
    """The checker sees the imports that exist (so an empty result above means something)."""
    edges = _imports(_modules())
    assert "codec.decoder" in edges["media.video"]
    assert "storage" in edges["coordinator.server"] and "security.tls" in edges["coordinator.server"]
    assert len(edges) > 100
