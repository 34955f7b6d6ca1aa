"""The public surface: what each public module exports, its docstrings, and the errors.

Walks the modules users import by path and checks every error's message once.
"""

from __future__ import annotations

import importlib
import importlib.resources
import importlib.util
import inspect
import types
from collections.abc import Callable

import pytest

import wm_async
import wm_async.stores
import wm_async.stores.memory
import wm_async.testing

#: Type aliases have no docstring of their own (at runtime they are a generic alias or,
#: for a recursive alias, its string), so the docstring check skips them.
TYPE_ALIASES = frozenset({"Data", "JSONValue", "TaskHandler", "CallNext", "Middleware"})

#: The documented public API's errors ...
DESIGN_ERRORS = (
    "WorkManagerError",
    "InvalidRequestError",
    "DataTooLargeError",
    "UnknownWorkerError",
    "StoreError",
    "StoreCorruptError",
    "NotRunningError",
)
#: ... and the API names it lists that exist so far.
DESIGN_NAMES = (
    "WorkManager",
    "WorkContext",
    "Result",
    "OneTimeWorkRequest",
    "Constraints",
    "NetworkType",
    "Backoff",
    "BackoffPolicy",
    "WorkInfo",
    "WorkQuery",
    "WorkState",
    "StopReason",
    "ExistingWorkPolicy",
    "ExistingPeriodicWorkPolicy",
    "OverwritingInputMerger",
    "ArrayCreatingInputMerger",
    "UpdateResult",
)


def _public_modules() -> list[types.ModuleType]:
    return [
        importlib.import_module(name)
        for name in (
            "wm_async",
            "wm_async.testing",
            "wm_async.signals",
            "wm_async.stores",
            "wm_async.stores.memory",
            "wm_async.stores.sqlite",
            "wm_async.cli",
            "wm_async.compat",
            "wm_async.sync",
            "wm_async.integrations.aiohttp",
            "wm_async.integrations.asgi",
            "wm_async.metrics",
            "wm_async.tracing",
        )
    ]


PUBLIC_MODULES = _public_modules()


def _exports(module: types.ModuleType) -> tuple[str, ...]:
    names: object = getattr(module, "__all__", None)
    assert isinstance(names, list | tuple), f"{module.__name__} has no __all__ sequence"
    assert all(isinstance(n, str) for n in names), module.__name__
    return tuple(names)


def _exported(module: types.ModuleType) -> list[tuple[str, object]]:
    return [(name, getattr(module, name)) for name in _exports(module)]


def _is_package(module: types.ModuleType) -> bool:
    return hasattr(module, "__path__")


module_param = pytest.mark.parametrize(
    "module", PUBLIC_MODULES, ids=[m.__name__ for m in PUBLIC_MODULES]
)


# -- __all__


@module_param
def test_all_names_are_defined_and_unique(module: types.ModuleType) -> None:
    names = _exports(module)
    assert len(names) == len(set(names)), f"duplicates in {module.__name__}.__all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{module.__name__}.__all__ names undefined {missing}"
    assert not [n for n in names if n.startswith("_")], "private names in __all__"


@module_param
def test_all_lists_everything_public_the_module_offers(module: types.ModuleType) -> None:
    """``__all__`` matches the module: nothing public is left out of it.

    A package front door (``__init__``) re-exports, so every public non-module attribute
    must be listed. A plain module imports helpers, so only what it defines itself counts.
    """
    names = set(_exports(module))
    if _is_package(module):
        offered = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and not isinstance(value, types.ModuleType)
            and name != "annotations"  # from __future__ import annotations
        }
    else:
        offered = {
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__
        }
    assert offered - names == set(), f"{module.__name__} offers names missing from __all__"


# -- docstrings


@module_param
def test_every_export_has_a_docstring(module: types.ModuleType) -> None:
    undocumented = [
        name
        for name, value in _exported(module)
        if name not in TYPE_ALIASES and not (value.__doc__ or "").strip()
    ]
    assert not undocumented, f"{module.__name__}: no docstring on {undocumented}"


@module_param
def test_public_methods_of_exported_classes_have_docstrings(module: types.ModuleType) -> None:
    undocumented = []
    for name, cls in _exported(module):
        if not inspect.isclass(cls):
            continue
        for attr, raw in vars(cls).items():
            if attr.startswith("_"):
                continue
            member = raw.fget if isinstance(raw, property) else getattr(raw, "__func__", raw)
            if not (inspect.isfunction(member) or inspect.ismethod(member)):
                continue  # enum members, constants
            # getdoc follows overrides up to the documented abstract method.
            if not (inspect.getdoc(getattr(cls, attr)) or "").strip():
                undocumented.append(f"{name}.{attr}")
    assert not undocumented, f"{module.__name__}: no docstring on {undocumented}"


@module_param
def test_module_has_a_docstring(module: types.ModuleType) -> None:
    assert (module.__doc__ or "").strip()


# -- errors


@module_param
def test_every_exported_exception_derives_from_work_manager_error(
    module: types.ModuleType,
) -> None:
    errors = [
        value
        for _, value in _exported(module)
        if inspect.isclass(value) and issubclass(value, BaseException)
    ]
    if module is wm_async:
        assert errors, "wm_async exports no exceptions"
    for error in errors:
        assert issubclass(error, wm_async.WorkManagerError), error


@pytest.mark.parametrize("name", DESIGN_ERRORS + DESIGN_NAMES)
def test_design_names_are_exported(name: str) -> None:
    assert name in wm_async.__all__
    assert hasattr(wm_async, name)


@pytest.mark.parametrize("name", DESIGN_ERRORS)
def test_design_errors_are_exceptions_under_the_base(name: str) -> None:
    error = getattr(wm_async, name)
    assert issubclass(error, wm_async.WorkManagerError)
    assert issubclass(error, Exception)


def test_work_manager_error_is_a_plain_exception() -> None:
    # catching WorkManagerError must not swallow cancellation or KeyboardInterrupt
    assert wm_async.WorkManagerError.__bases__ == (Exception,)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (wm_async.InvalidRequestError, ValueError),
        (wm_async.DataTooLargeError, ValueError),
        (wm_async.DataTooLargeError, wm_async.InvalidRequestError),
        (wm_async.UnknownWorkerError, LookupError),
        (wm_async.StoreCorruptError, wm_async.StoreError),
        (wm_async.NotRunningError, RuntimeError),
    ],
)
def test_error_mix_ins(error: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(error, builtin)
    assert issubclass(error, wm_async.WorkManagerError)


def test_invalid_request_error_keeps_fields_and_names_field_and_value() -> None:
    err = wm_async.InvalidRequestError("worker", "", "must be 1 to 255 characters")
    assert (err.field, err.value, err.reason) == ("worker", "", "must be 1 to 255 characters")
    assert str(err) == "invalid worker='': must be 1 to 255 characters"


def test_invalid_request_error_shortens_a_huge_value() -> None:
    err = wm_async.InvalidRequestError("input", "x" * 10_000, "too long")
    assert err.value == "x" * 10_000  # the attribute keeps the whole value
    message = str(err)
    assert message.startswith("invalid input='xxx")
    assert "...: too long" in message
    assert len(message) < 300


def test_data_too_large_error() -> None:
    err = wm_async.DataTooLargeError("output", 20_000, 10_240)
    assert (err.field, err.size, err.limit) == ("output", 20_000, 10_240)
    message = str(err)
    assert "output" in message
    assert "20000 bytes" in message
    assert "max_data_bytes=10240" in message
    assert "pass a reference" in message  # says what to do instead


def test_unknown_worker_error_says_how_to_register() -> None:
    err = wm_async.UnknownWorkerError("sync_feed")
    assert err.name == "sync_feed"
    assert str(err) == (
        "no worker registered as 'sync_feed'; register one with @manager.worker('sync_feed')"
    )


def test_not_running_error_names_operation_and_state() -> None:
    err = wm_async.NotRunningError("enqueue", "STOPPED")
    assert (err.operation, err.state) == ("enqueue", "STOPPED")
    message = str(err)
    assert "cannot enqueue" in message
    assert "STOPPED" in message
    assert "async with manager:" in message


@pytest.mark.parametrize("error", [wm_async.StoreError, wm_async.StoreCorruptError])
def test_store_errors_carry_their_message(error: Callable[[str], wm_async.StoreError]) -> None:
    # Stores build these messages themselves (naming the file and the failed operation)
    # and chain the driver error as __cause__, so the class adds nothing to the text.
    err = error("cannot open wm_async.db: file is not a database")
    assert str(err) == "cannot open wm_async.db: file is not a database"
    assert isinstance(err, wm_async.StoreError)


# -- packaging


def test_py_typed_ships() -> None:
    marker = importlib.resources.files("wm_async").joinpath("py.typed")
    assert marker.is_file()
