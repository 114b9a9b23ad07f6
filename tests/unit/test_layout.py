"""The layout holds: small modules, a lean shipped benchmark, no import cycle (lazy imports
included: grimp sees imports inside functions too). The layers themselves are import-linter's
contract in pyproject.toml, checked by ``lint-imports`` in CI."""

from __future__ import annotations

from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[2] / "writebehind"
MOST_LINES = 500
BENCH_MOST_LINES = 1_500


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_is_over_500_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE)): _lines(p) for p in PACKAGE.rglob("*.py")}
    assert len(sizes) > 50
    assert {name: n for name, n in sizes.items() if n > MOST_LINES} == {}


def test_the_benchmark_shipped_in_the_package_is_at_most_1500_lines() -> None:
    bench = PACKAGE / "tools" / "bench"
    shipped = sum(_lines(p) for p in bench.rglob("*.py"))
    assert 0 < shipped <= BENCH_MOST_LINES
    # The rest of the benchmark code lives in benchmarks/, outside the package.
    assert not any("bench" in p.name for p in PACKAGE.glob("*") if p != PACKAGE / "tools")


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle_lazy_imports_included() -> None:
    graph = grimp.build_graph("writebehind")
    assert len(graph.modules) > 50
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(module)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_architecture_page_names_every_module() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    unnamed = []
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py" and path.parent != PACKAGE:
            continue  # a folder's own docstring names its modules
        if f"`{relative}`" not in page and f"`writebehind/{relative}`" not in page:
            unnamed.append(relative)
    assert unnamed == []
