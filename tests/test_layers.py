"""The package's shape as a test: no import cycle, no lower layer importing an upper one.

Layers, lowest first (a module may import its own layer and the ones below):

    config (config, config_schema, errors, io, paths, provenance)
    <- data / models / ops (the model library)
    <- records (run records and run identity, which the engine writes and reads)
    <- engine
    <- diagnostics / harness (siblings: neither imports the other)
    <- viz
    <- cli

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import
hides a cycle from the interpreter, not from the reader.
"""

from __future__ import annotations

import ast
import graphlib
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "rtinst"

# module prefix -> (rank, layer name); the longest matching prefix wins.
LAYERS = {
    "rtinst": (0, "config"),  # the package's own __init__ (__version__) only
    "rtinst.config": (0, "config"),
    "rtinst.config_schema": (0, "config"),
    "rtinst.errors": (0, "config"),
    "rtinst.io": (0, "config"),
    "rtinst.provenance": (0, "config"),
    "rtinst.paths": (0, "config"),
    "rtinst.recipe": (0, "config"),  # reads configs only (rtinst config recipe)
    "rtinst.data": (1, "data"),
    "rtinst.models": (1, "models"),
    "rtinst.ops": (1, "ops"),
    "rtinst.records": (2, "records"),
    "rtinst.engine": (3, "engine"),
    "rtinst.diagnostics": (4, "diagnostics"),
    "rtinst.harness": (4, "harness"),
    "rtinst.viz": (5, "viz"),
    "rtinst.cli": (6, "cli"),
    "rtinst.__main__": (6, "cli"),
}
# Same rank, still not allowed to import each other.
SIBLINGS_APART = {frozenset({"diagnostics", "harness"})}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported rtinst module (a package means its __init__)
    where: str  # file:line, the file relative to the package's parent folder


def module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> tuple[set[str], list[Import]]:
    """Every module under ``root`` (a package folder) and every import of another of them."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    imports = []
    for f in files:
        source = module_name(f, root)
        rel = f.relative_to(root.parent)
        is_pkg = f.name == "__init__.py"
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = source.split(".") if is_pkg else source.split(".")[:-1]
                    pkg = pkg[:len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                while t and t not in modules:  # ``import rtinst.a.b`` of a non-module name
                    t = t.rpartition(".")[0]
                if t and t != source and t.split(".")[0] == root.name:
                    imports.append(Import(source, t, f"{rel}:{node.lineno}"))
    return modules, imports


def layer(module: str) -> tuple[int, str] | None:
    parts = module.split(".")
    if len(parts) == 1:
        return LAYERS.get(module)
    for n in range(len(parts), 1, -1):  # not the bare package: a new rtinst/x.py needs a layer
        hit = LAYERS.get(".".join(parts[:n]))
        if hit:
            return hit
    return None


def upward_imports(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if layer(imp.source) is None or layer(imp.target) is None:
            continue  # test_every_module_has_a_layer names it
        (src_rank, src), (dst_rank, dst) = layer(imp.source), layer(imp.target)
        if dst_rank > src_rank or (src != dst and frozenset({src, dst}) in SIBLINGS_APART):
            bad.append(f"{imp.where}: {imp.source} ({src}) imports {imp.target} ({dst})")
    return list(dict.fromkeys(bad))  # one line per import statement


def import_cycle(imports: list[Import]) -> list[str]:
    """One cycle as its imports (file:line each), or [] when the graph is acyclic."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        graph.setdefault(imp.source, set()).add(imp.target)
    try:
        graphlib.TopologicalSorter(graph).prepare()
        return []
    except graphlib.CycleError as e:
        cycle = e.args[1]  # [a, b, ..., a], each importing the previous one
    first = {}
    for imp in imports:
        first.setdefault((imp.source, imp.target), imp)
    steps = [first[(b, a)] for a, b in zip(cycle, cycle[1:])]
    return [f"{s.where}: {s.source} imports {s.target}" for s in steps]


@pytest.fixture(scope="module")
def graph():
    return import_graph(PACKAGE_ROOT)


def test_every_module_has_a_layer(graph):
    modules, _ = graph
    missing = sorted(m for m in modules if layer(m) is None)
    assert not missing, f"modules without a layer (add them to LAYERS in {__file__}): {missing}"


def test_no_lower_layer_imports_an_upper_one(graph):
    _, imports = graph
    bad = upward_imports(imports)
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_no_import_cycle(graph):
    _, imports = graph
    cycle = import_cycle(imports)
    assert not cycle, "import cycle:\n" + "\n".join(cycle)


def test_the_graph_sees_lazy_relative_and_submodule_imports(graph):
    _, imports = graph
    edges = {(i.source, i.target) for i in imports}
    assert ("rtinst.records", "rtinst.models.backbones") in edges  # inside a function
    assert ("rtinst.cli.reproduce", "rtinst.harness.tables") in edges  # ``from rtinst.harness import tables``
    assert ("rtinst.harness.estimates", "rtinst.harness.plan") in edges


def test_a_new_top_level_module_needs_a_layer():
    assert layer("rtinst") == (0, "config") and layer("rtinst.harness.plan") == (4, "harness")
    assert layer("rtinst.newthing") is None


def test_checker_reports_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / "rtinst"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine/__init__.py").write_text("")
    (pkg / "config.py").write_text("import json\n\n\ndef f():\n    from rtinst.engine import train\n")
    (pkg / "engine/train.py").write_text("from . import loop\n")
    (pkg / "engine/loop.py").write_text("from rtinst.engine.train import x\n")
    (pkg / "diagnostics").mkdir()
    (pkg / "diagnostics/__init__.py").write_text("")
    (pkg / "diagnostics/probe.py").write_text("from rtinst.harness.specs import y\n")
    (pkg / "harness").mkdir()
    (pkg / "harness/__init__.py").write_text("")
    (pkg / "harness/specs.py").write_text("from rtinst.config import z\n")
    modules, imports = import_graph(pkg)
    assert upward_imports(imports) == [
        "rtinst/config.py:5: rtinst.config (config) imports rtinst.engine.train (engine)",
        "rtinst/diagnostics/probe.py:1: rtinst.diagnostics.probe (diagnostics) imports "
        "rtinst.harness.specs (harness)"]
    cycle = import_cycle(imports)
    assert sorted(cycle) == ["rtinst/engine/loop.py:1: rtinst.engine.loop imports rtinst.engine.train",
                             "rtinst/engine/train.py:1: rtinst.engine.train imports rtinst.engine.loop"]
