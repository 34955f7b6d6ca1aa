"""The code in README.md and docs/: every Python block compiles, and the blocks that
stand for a whole file define (or import) every name they use."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
_FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def _blocks(name: str) -> list[str]:
    import textwrap

    return [textwrap.dedent(m[1]) for m in _BLOCK.finditer((ROOT / name).read_text())]


def _all_blocks() -> list[tuple[str, int, str]]:
    return [(name, i, code) for name in _FILES for i, code in enumerate(_blocks(name))]


def _complete(name: str, code: str) -> bool:
    """Blocks that run as written: all of docs/integrations.md, and README blocks that
    open with an import (the others are fragments of an app, and say so)."""
    if name == "docs/integrations.md":
        return True
    return (
        name == "README.md" and code.startswith(("import ", "from ")) and "def signup" not in code
    )


@pytest.mark.parametrize(
    ("name", "index", "code"), [pytest.param(*b, id=f"{b[0]}-{b[1]}") for b in _all_blocks()]
)
def test_every_python_block_compiles(name: str, index: int, code: str) -> None:
    # compile(), not ast.parse: `async with` outside a function is a compiler error. A
    # fragment (the body of some async function of the app's) may await at top level.
    flags = 0 if _complete(name, code) else ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    compile(code, f"{name}[{index}]", "exec", flags=flags)


def test_whole_file_blocks_use_no_undefined_name(tmp_path: Path) -> None:
    complete = [(n, i, c) for n, i, c in _all_blocks() if _complete(n, c)]
    assert len(complete) >= 6  # README's example and PostgreSQL blocks, integrations.md's four
    for name, index, code in complete:
        path = tmp_path / f"block_{index}.py"
        path.write_text(code)
        found = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F821,F401", path],
            capture_output=True,
            text=True,
            check=False,
        )
        assert found.returncode == 0, f"{name} block {index}:\n{found.stdout}"


def test_postgres_store_imports_from_the_stores_package() -> None:
    from wm_async.stores import PostgresStore, SQLiteStore
    from wm_async.stores.postgres import PostgresStore as direct
    from wm_async.stores.sqlite import SQLiteStore as sqlite_direct

    assert PostgresStore is direct
    assert SQLiteStore is sqlite_direct
    with pytest.raises(AttributeError):
        _ = __import__("wm_async.stores", fromlist=["x"]).NoSuchStore
