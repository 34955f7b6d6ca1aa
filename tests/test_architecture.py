"""The import contract: wm_async is built in layers, each importing only from the layers
below it, with no import cycle anywhere (docs/architecture.md draws them).

Every import counts, wherever it is written: at module level, inside a function, or
under ``if TYPE_CHECKING:``. CI runs this file with the rest of the suite.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wm_async"

#: Layers, lowest first. A module belongs to the first layer whose prefix it matches.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("wm_async._core",)),
    ("clock and signals", ("wm_async._clock", "wm_async.signals")),
    ("stores", ("wm_async.stores",)),
    ("runtime", ("wm_async._runtime",)),
    ("api", ("wm_async._api",)),
    (
        "edges",
        (
            "wm_async.cli",
            "wm_async._cli",
            "wm_async.integrations",
            "wm_async.compat",
            "wm_async.testing",
            "wm_async.__main__",
            "wm_async.sync",
            "wm_async.dashboard",
            "wm_async.metrics",
            "wm_async.tracing",
        ),
    ),
    ("package root", ("wm_async.extend", "wm_async")),
)
#: What the pure core may not import: no event loop, no I/O, no clock. (``ids`` reads the
#: time for time-ordered ids, and only that.)
CORE_FORBIDDEN = frozenset(
    {"anyio", "asyncio", "aiosqlite", "asyncpg", "sqlite3", "socket", "threading", "time"}
)
CORE_EXCEPTIONS = {"wm_async._core.ids": frozenset({"time"})}
#: Modules above this many lines must be split (a module is read whole).
MAX_LINES = 600


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of a wm_async module in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "wm_async":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "wm_async":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                # `from . import x` imports the module x; `from .x import y` imports x.
                yield (candidate if candidate in known else target), node.lineno


def external_imports(path: Path) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        module: {target for target, _ in imports(module, path, known) if target != module}
        for module, path in known.items()
    }


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    known = modules()
    upward = []
    for module, path in known.items():
        for target, line in imports(module, path, known):
            if layer_of(target) > layer_of(module):
                upward.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {module} "
                    f"({LAYERS[layer_of(module)][0]}) imports {target} "
                    f"({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_there_is_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if target not in edges:
                continue
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_core_is_pure() -> None:
    offending = []
    for module, path in modules().items():
        if layer_of(module) != 0:
            continue
        allowed = CORE_EXCEPTIONS.get(module, frozenset())
        for name, line in external_imports(path):
            if name in CORE_FORBIDDEN - allowed:
                offending.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name}")
    assert not offending, "the core must do no I/O and read no clock:\n" + "\n".join(offending)


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_stay_small(module: str) -> None:
    lines = len(modules()[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it along a seam"


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The helpers resolve relative imports as Python does (the contract is only as good
    as this)."""
    root = tmp_path / "wm_async"
    (root / "_core").mkdir(parents=True)
    (root / "_core" / "__init__.py").write_text("")
    source = "from .._api.manager import WorkManager\nfrom . import model\n"
    (root / "_core" / "record.py").write_text(source)
    known = {
        "wm_async._core.record": root / "_core" / "record.py",
        "wm_async._core.model": root / "_core" / "model.py",
        "wm_async._api.manager": root / "_api" / "manager.py",
    }
    found = list(imports("wm_async._core.record", root / "_core" / "record.py", known))
    assert found == [("wm_async._api.manager", 1), ("wm_async._core.model", 2)]
    assert layer_of("wm_async._api.manager") > layer_of("wm_async._core.record")
