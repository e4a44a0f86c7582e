"""The package's import graph: no cycle, and only the entry point imports the CLI.

The layer contracts themselves are import-linter's (pyproject.toml, run by scripts/test); these
are the rules it has no contract for, and the exact reach of its one exemption. grimp reads
every import statement, function-local and TYPE_CHECKING ones included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import blazerpc.errors

GRAPH = grimp.build_graph("blazerpc", cache_dir=None)  # no .grimp_cache/ in the tree


def test_no_module_imports_itself_through_others() -> None:
    cycles = [
        (module, path)
        for module in sorted(GRAPH.modules)
        for imported in GRAPH.find_modules_directly_imported_by(module)
        if (path := GRAPH.find_shortest_chain(importer=imported, imported=module)) is not None
    ]
    assert cycles == []


def test_only_the_entry_point_imports_the_cli() -> None:
    assert GRAPH.find_modules_that_directly_import("blazerpc.cli") == {"blazerpc.__main__"}


def test_every_layer_is_a_subpackage() -> None:
    layers = {"schema", "wire", "runtime", "grpc", "http", "openinference", "remote"}
    packages = {module.split(".")[1] for module in GRAPH.modules if module.count(".") == 2}
    assert layers <= packages


def test_errors_takes_only_the_status_enum_from_grpclib() -> None:
    """pyproject's contracts let `errors` import grpclib (import-linter sees only the package
    name); this pins what it may take: grpclib.const, for Status."""
    tree = ast.parse(Path(blazerpc.errors.__file__).read_text(encoding="utf-8"))
    taken = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("grpclib")
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("grpclib")
    }
    assert taken == {"grpclib.const"}
