"""The store conformance suite (:mod:`wm_async.testing.conformance`) on every store: the
suite's tests are imported here, as its docstring tells a third party to do, and
conftest.py's ``store`` fixture runs each on memory, SQLite and PostgreSQL.

The tests below the import check the suite as shipped: that it exports every test it
has, and that a project outside this repository runs it by the documented recipes.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _pytest.assertion.rewrite import AssertionRewritingHook

import wm_async
from wm_async.testing import conformance
from wm_async.testing.conformance import *

#: Where wm_async is imported from (this checkout), for the child processes.
SOURCE_ROOT = Path(wm_async.__file__).resolve().parent.parent


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SOURCE_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def test_the_suite_exports_every_test_of_its_modules() -> None:
    """A test added to a module of the suite (or a module added to it) runs everywhere
    the suite is imported, with asserts that show the values compared."""
    modules = [
        importlib.import_module(f"{conformance.__name__}.{info.name}")
        for info in pkgutil.iter_modules(conformance.__path__)
    ]
    tests = {
        name
        for module in modules
        if module.__name__.rpartition(".")[2].startswith("test_")
        for name, value in vars(module).items()
        if name.startswith("test_") and inspect.isfunction(value)
    }
    assert len(modules) >= 7  # _helpers and a module per operation
    assert sorted(conformance.__all__) == sorted(tests)
    not_rewritten = [
        m.__name__ for m in modules if not isinstance(m.__loader__, AssertionRewritingHook)
    ]
    assert not_rewritten == []


def test_importing_the_test_helpers_does_not_import_pytest() -> None:
    code = "import sys, wm_async.testing; print(sorted(m for m in sys.modules if 'pytest' in m))"
    child = subprocess.run(
        [sys.executable, "-c", code],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert child.stdout.strip() == "[]"


CONFTEST = '''
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from wm_async.stores import Store
from wm_async.stores.memory import MemoryStore


class ForgetfulStore(MemoryStore):
    """Does not prune: the suite must catch it."""

    async def prune(self, *, finished_before: float) -> int:
        return 0


@pytest.fixture(params=["memory", "forgetful"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    kind = MemoryStore if request.param == "memory" else ForgetfulStore
    async with kind() as opened:
        yield opened
'''


@pytest.mark.parametrize("recipe", ["import", "pyargs"])
def test_a_third_party_project_runs_the_suite(tmp_path: Path, recipe: str) -> None:
    """The recipes of the suite's docstring, in a project of its own: every test runs on
    the project's stores, and a store that does not conform fails (only) the tests of
    what it gets wrong, showing the values compared."""
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nasyncio_mode = "auto"\n')
    if recipe == "import":
        (tmp_path / "tests").mkdir()
        (tmp_path / "tests" / "conftest.py").write_text(CONFTEST)
        (tmp_path / "tests" / "test_my_store_conformance.py").write_text(
            textwrap.dedent(
                """
                from wm_async.testing.conformance import *  # noqa: F403
                """
            )
        )
        args = ["tests/test_my_store_conformance.py"]
    else:
        (tmp_path / "conftest.py").write_text(CONFTEST)
        args = ["--pyargs", "wm_async.testing.conformance"]
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rf", *args],
        cwd=tmp_path,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = child.stdout + child.stderr
    assert child.returncode == 1, output
    summary = re.search(r"(\d+) failed, (\d+) passed(?:, (\d+) skipped)? in ", output)
    assert summary is not None, output
    failed, passed, skipped = (int(n or 0) for n in summary.groups())
    assert failed + passed + skipped == 2 * len(conformance.__all__), output
    failures = [
        line.split(" ", 1)[1].split("::", 1)[1].split(" ", 1)[0]
        for line in output.splitlines()
        if line.startswith("FAILED ")
    ]
    assert len(failures) == failed, output
    assert "test_prune_deletes_old_finished_works_only[forgetful]" in failures
    assert all(f.startswith("test_prune_") and f.endswith("[forgetful]") for f in failures)
    assert "assert 0 == 2" in output  # the rewritten assert shows what prune returned
