"""The store conformance suite: what every :class:`~wm_async.stores.Store` must do,
checked through its public operations, one module per operation: ``test_insert``,
``test_get``, ``test_claim_due``, ``test_apply``, ``test_chains`` (insert with
prerequisites, and what apply does to dependents), ``test_enqueue_unique``,
``test_update_spec``, ``test_query``, ``test_prune``, ``test_requeue_orphans``,
``test_leases``, ``test_signals_in_use``, ``test_paused_workers``, ``test_browse``
(the dashboard's reads) and ``test_count_works``.

wm_async runs it on its memory, SQLite and PostgreSQL stores; a store of your own runs
it the same way. The tests are pytest coroutine functions that take one fixture,
``store``: an open, empty store (a fresh one per test). They need pytest and
pytest-asyncio in auto mode; importing this package imports pytest.

In your project, provide the fixture (in ``conftest.py`` or the test module)::

    from collections.abc import AsyncIterator

    import pytest

    from wm_async.stores import Store
    from my_package import MyStore

    @pytest.fixture
    async def store() -> AsyncIterator[Store]:
        async with MyStore(...) as opened:  # empty: a new database, schema, ...
            yield opened

import the suite into a test module, say ``tests/test_my_store_conformance.py``::

    from wm_async.testing.conformance import *  # noqa: F403

and run pytest with ``asyncio_mode = "auto"`` (e.g. ``[tool.pytest.ini_options]`` in
``pyproject.toml``)::

    python -m pytest tests/test_my_store_conformance.py

A parametrised fixture runs the suite once per parameter: wm_async's own
``tests/test_store_conformance.py`` is that import, with ``tests/conftest.py``'s
``store`` fixture parametrised over memory, SQLite and PostgreSQL. ``-k`` picks tests as
usual (``-k claim``); each test's name says what it checks and a failure shows the
values compared.

Without a test module: define the fixture in the ``conftest.py`` at your project's root
(pytest's rootdir; a conftest further down does not reach the installed package) and run
``python -m pytest --pyargs wm_async.testing.conformance``.

The suite calls only the store's operations; the records it writes and the results it
expects come from :mod:`wm_async._core.lifecycle`, which decides every transition.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable

import pytest

#: The suite's modules, one per store operation (imported below: keep the lists in step;
#: tests/test_store_conformance.py checks that every test of the package is exported).
_MODULE_NAMES = (
    "test_insert",
    "test_get",
    "test_claim_due",
    "test_apply",
    "test_chains",
    "test_enqueue_unique",
    "test_update_spec",
    "test_query",
    "test_prune",
    "test_requeue_orphans",
    "test_leases",
    "test_signals_in_use",
    "test_paused_workers",
    "test_browse",
    "test_count_works",
)

# pytest rewrites the asserts of the modules it collects, and of any module named like a
# test file, so that a failure shows the values compared; these are imported from here,
# and the helpers are not named so (nor, in some projects, the tests): mark them all,
# before they are imported.
pytest.register_assert_rewrite(*(f"{__name__}.{name}" for name in ("_helpers", *_MODULE_NAMES)))

from . import (  # after register_assert_rewrite, on purpose
    test_apply,
    test_browse,
    test_chains,
    test_claim_due,
    test_count_works,
    test_enqueue_unique,
    test_get,
    test_insert,
    test_leases,
    test_limits,
    test_paused_workers,
    test_prune,
    test_query,
    test_requeue_orphans,
    test_signals_in_use,
    test_update_spec,
)


def _collect(*modules: types.ModuleType) -> dict[str, Callable[..., object]]:
    """Every test function of ``modules``, by name."""
    tests: dict[str, Callable[..., object]] = {}
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("test_") and inspect.isfunction(value):
                if name in tests:
                    raise RuntimeError(f"two conformance tests are named {name}")
                tests[name] = value
    return tests


_TESTS = _collect(
    test_insert,
    test_get,
    test_claim_due,
    test_apply,
    test_chains,
    test_enqueue_unique,
    test_update_spec,
    test_query,
    test_prune,
    test_requeue_orphans,
    test_leases,
    test_signals_in_use,
    test_paused_workers,
    test_limits,
    test_browse,
    test_count_works,
)
globals().update(_TESTS)
__all__ = tuple(_TESTS)
