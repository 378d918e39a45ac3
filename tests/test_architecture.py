"""The import structure of gateway/: no cycle among its modules, and pure provider adapters and codecs.

Every module under gateway/ is parsed with `ast` (nothing is imported). Every import statement counts,
wherever it stands: module level, inside a function (a lazy import is still a dependency), under
`if TYPE_CHECKING:`. An import names the module it reaches: `from gateway.x import y` is an edge to
gateway.x.y when that is a module or package, else to gateway.x (y is an attribute of its
__init__); relative imports are resolved against the importing module's package. The implicit import
of a package's __init__ by its submodules is not an edge (create_app's imports would make everything
a cycle through gateway/__init__.py, which runs nothing at import).

The rules (docs/architecture.md): no cycle; gateway/providers/*, gateway/wire/* (pure over bytes,
canonical requests and routes) and gateway/dlp/* (pure over texts) import nothing from the pipeline,
the API or console blueprints, the database, the ORM models or the stores. A failure names every
offending import with file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PURE = ("gateway.providers", "gateway.wire", "gateway.dlp")
FORBIDDEN_TO_PURE = ("gateway.pipeline", "gateway.api", "gateway.admin", "gateway.db", "gateway.models",
                     "gateway.stores")


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    file: str  # relative to the root walked
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.source} -> {self.target}"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module under root/package (a package is its __init__.py)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(root: Path, package: str) -> dict[str, list[Import]]:
    """Module -> its imports of other modules of `package` (each with file and line)."""
    known = modules(root, package)
    graph: dict[str, list[Import]] = {name: [] for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(name, is_package, node.module, node.level)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:  # `import a.b.c` where c is an attribute
                    target = target.rpartition(".")[0]
                if target and target != name and (target == package or target.startswith(package + ".")):
                    edge = Import(name, target, path.relative_to(root).as_posix(), node.lineno)
                    if edge not in graph[name]:
                        graph[name].append(edge)
    return graph


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    anchor = module.split(".") if is_package else module.split(".")[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)


@dataclass(frozen=True)
class Cycle:
    chain: list[Import]  # a shortest cycle, import by import
    component: list[str]  # every module caught with it (strongly connected: each reaches each)

    def __str__(self) -> str:
        return (f"cycle of {len(self.chain)} modules:\n  " + "\n  ".join(str(e) for e in self.chain)
                + f"\n  (all {len(self.component)} modules in this knot: {', '.join(self.component)})")


def cycles(graph: dict[str, list[Import]]) -> list[Cycle]:
    """One shortest cycle per strongly connected component that has one, with the component."""
    return [Cycle(_shortest_cycle(graph, min(component), component), sorted(component))
            for component in _components(graph)]


def _components(graph: dict[str, list[Import]]) -> list[set[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for edge in edges:
                nxt = edge.target
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(component)
    return out


def _shortest_cycle(graph: dict[str, list[Import]], start: str, within: set[str]) -> list[Import]:
    """Breadth-first from `start` back to itself, staying inside its component."""
    came: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target == start:
                    chain = [edge]
                    while chain[0].source != start:
                        chain.insert(0, came[chain[0].source])
                    return chain
                if edge.target in within and edge.target not in came:
                    came[edge.target] = edge
                    nxt_frontier.append(edge.target)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start}")  # a component of more than one module has one


def layer_violations(graph: dict[str, list[Import]]) -> list[Import]:
    """Imports from a provider adapter or codec into the pipeline, blueprints, database, models or stores."""
    def within(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    return [edge for source, edges in sorted(graph.items()) if within(source, PURE)
            for edge in edges if within(edge.target, FORBIDDEN_TO_PURE)]


def _report(found: list[Cycle]) -> str:
    return "\n\n".join(str(cycle) for cycle in found)


# ---- the rules, on gateway/ ----------------------------------------------------------------------------

def test_no_import_cycle_among_gateway_modules():
    found = cycles(import_graph(ROOT, "gateway"))
    assert not found, f"{len(found)} import cycle(s) among gateway modules:\n\n{_report(found)}"


def test_provider_adapters_and_codecs_stay_pure():
    bad = layer_violations(import_graph(ROOT, "gateway"))
    assert not bad, ("gateway/providers/* and gateway/wire/* must not import " + ", ".join(FORBIDDEN_TO_PURE)
                     + f"; {len(bad)} import(s) do:\n  " + "\n  ".join(str(e) for e in bad))


def test_the_walk_sees_every_module_and_the_imports_that_bind_the_app():
    graph = import_graph(ROOT, "gateway")
    assert len(graph) == len(list((ROOT / "gateway").rglob("*.py")))
    # a function-level import counts: create_app() imports the blueprints inside the function
    assert "gateway.api" in {e.target for e in graph["gateway"]}


# ---- the checker itself, on synthetic trees ----------------------------------------------------------------

def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_reports_a_cycle_through_a_function_level_import(tmp_path):
    _tree(tmp_path, {
        "app/__init__.py": "",
        "app/a.py": "from app import b\n",
        "app/b.py": "import os\n\ndef later():\n    from app.c import thing\n",
        "app/c.py": "from .a import x  # relative\n",
        "app/d.py": "from app import a\n",  # reaches the cycle, is not part of it
    })
    (cycle,) = cycles(import_graph(tmp_path, "app"))
    assert [(e.source, e.target, e.line) for e in cycle.chain] == [("app.a", "app.b", 1), ("app.b", "app.c", 4),
                                                                   ("app.c", "app.a", 1)]
    assert cycle.component == ["app.a", "app.b", "app.c"]
    report = _report([cycle])
    assert "app/b.py:4 app.b -> app.c" in report and "app.d" not in report


def test_checker_accepts_a_tree_without_cycles_and_resolves_package_attributes(tmp_path):
    _tree(tmp_path, {
        "app/__init__.py": "def create():\n    from app import web\n",  # the parent is no implicit edge
        "app/web.py": "from app.sub import VALUE\nimport app.sub.leaf\n",
        "app/sub/__init__.py": "VALUE = 1\n",
        "app/sub/leaf.py": "from . import VALUE\nfrom .. import sub\n",
    })
    graph = import_graph(tmp_path, "app")
    assert cycles(graph) == []
    assert {e.target for e in graph["app.web"]} == {"app.sub", "app.sub.leaf"}
    assert [(e.target, e.line) for e in graph["app.sub.leaf"]] == [("app.sub", 1), ("app.sub", 2)]


def test_checker_names_an_adapter_that_imports_the_pipeline(tmp_path):
    _tree(tmp_path, {
        "gateway/__init__.py": "",
        "gateway/db.py": "",
        "gateway/pipeline/__init__.py": "",
        "gateway/pipeline/context.py": "",
        "gateway/wire/__init__.py": "",
        "gateway/wire/codec.py": "from gateway.providers import base\n",  # wire -> providers is allowed
        "gateway/providers/__init__.py": "",
        "gateway/providers/base.py": "",
        "gateway/providers/openai.py": "import json\n\ndef call():\n    from gateway.pipeline.context import Ctx\n"
                                       "    from gateway import db\n",
    })
    bad = layer_violations(import_graph(tmp_path, "gateway"))
    assert [str(e) for e in bad] == ["gateway/providers/openai.py:4 gateway.providers.openai -> gateway.pipeline.context",
                                     "gateway/providers/openai.py:5 gateway.providers.openai -> gateway.db"]
