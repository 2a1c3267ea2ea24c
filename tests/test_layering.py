"""Layering of the package (docs/design.md §9): the import graph of phasediff/ has no cycle,
and the lower layers never import the upper ones.

The graph is read from the source with ``ast`` (nothing is imported), and it counts every
import, including the ones inside functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "phasediff"

# Edges that break the rules below and are scheduled to go, as (importing module, imported
# module); a new violation still fails. Empty: the benchmarks and the loading of trained runs
# moved to phasediff/bench/ (issue 16 item 4), so evaluation/ imports neither training/ nor
# bench/.
KNOWN_LAYER_VIOLATIONS: set[tuple[str, str]] = set()

# Cycles still being removed elsewhere, as sorted tuples of module names (empty when none).
KNOWN_CYCLES: set[tuple[str, ...]] = set()

# Leaf helper modules (docs/design.md §9): they import nothing of phasediff, and every package
# but processes/ may import them.
LEAF_MODULES = ("phasediff.files", "phasediff.validation")


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name → (file, is_package) for every .py file of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module → the phasediff modules (or packages) it imports, anywhere in its body.

    ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module, else of
    ``a.b``; relative imports are resolved against the importing module's package.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name.split(".") if is_package else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.add(submodule if submodule in modules else source)
        graph[name] = {
            t for t in targets if (t == "phasediff" or t.startswith("phasediff.")) and t != name
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
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
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _violations(importer: str, allowed) -> list[str]:
    graph = import_graph()
    bad = []
    for module in sorted(graph):
        if not _in(module, importer):
            continue
        for target in sorted(graph[module]):
            if not allowed(target) and (module, target) not in KNOWN_LAYER_VIOLATIONS:
                bad.append(f"{module} imports {target}")
    return bad


def test_graph_sees_package_and_lazy_imports():
    graph = import_graph()
    assert "phasediff.processes.linear" in graph and "phasediff.training.trainer" in graph
    # a function-level import is an edge too (Trainer.sample_image → training.plots)
    assert "phasediff.training.plots" in graph["phasediff.training.trainer"]


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [("a", "b", "c")]


def test_no_import_cycles():
    found = [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not found, "import cycles in phasediff/: " + "; ".join(" ↔ ".join(c) for c in found)


def test_known_exceptions_are_still_needed():
    """Remove an entry from KNOWN_* as soon as the code no longer needs it."""
    graph = import_graph()
    stale = [edge for edge in KNOWN_LAYER_VIOLATIONS if edge[1] not in graph.get(edge[0], ())]
    stale += [c for c in KNOWN_CYCLES if c not in cycles(graph)]
    assert not stale, f"stale exceptions in tests/test_layering.py: {stale}"


def test_processes_import_nothing_else_of_phasediff():
    bad = _violations("phasediff.processes", lambda t: _in(t, "phasediff.processes"))
    assert not bad, bad


def _in_leaf(module: str) -> bool:
    return any(_in(module, leaf) for leaf in LEAF_MODULES)


def test_leaf_modules_import_nothing_of_phasediff():
    graph = import_graph()
    assert all(leaf in graph for leaf in LEAF_MODULES)
    bad = [f"{leaf} imports {t}" for leaf in LEAF_MODULES for t in sorted(graph[leaf])]
    assert not bad, bad


def test_data_imports_nothing_else_of_phasediff_but_the_leaf_helpers():
    bad = _violations("phasediff.data", lambda t: _in(t, "phasediff.data") or _in_leaf(t))
    assert not bad, bad


def test_models_import_nothing_else_of_phasediff_but_the_leaf_helpers():
    bad = _violations("phasediff.models", lambda t: _in(t, "phasediff.models") or _in_leaf(t))
    assert not bad, bad


def test_samplers_do_not_import_training():
    bad = _violations("phasediff.samplers", lambda t: not _in(t, "phasediff.training"))
    assert not bad, bad


def test_evaluation_imports_neither_training_nor_bench():
    def allowed(target: str) -> bool:
        return not (_in(target, "phasediff.training") or _in(target, "phasediff.bench"))

    bad = _violations("phasediff.evaluation", allowed)
    assert not bad, bad
