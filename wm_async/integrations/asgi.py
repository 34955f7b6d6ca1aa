"""Run a :class:`~wm_async.WorkManager` for the lifetime of an ASGI application.

Starlette and FastAPI take a *lifespan* (``Starlette(lifespan=…)``,
``FastAPI(lifespan=…)``)::

    from fastapi import FastAPI, Request
    from wm_async.integrations.asgi import lifespan

    manager = wm.WorkManager(store="sqlite:///wm_async.db")
    app = FastAPI(lifespan=lifespan(manager))

    @app.post("/reports")
    async def create_report(request: Request) -> dict[str, str]:
        manager = request.state.work_manager      # or the module-level `manager`
        ...

An app with a lifespan of its own runs the manager inside it instead:
``async with manager: yield``.

Quart serves through its own hooks::

    from quart import Quart
    from wm_async.integrations.asgi import init_quart

    app = Quart(__name__)
    init_quart(app, manager)      # current_app.extensions["wm_async"] in handlers

Either way the manager starts before the server accepts requests (a failure to start
fails the server's start-up) and stops gracefully when the server shuts down: running
work gets ``shutdown_grace``, then goes back to ENQUEUED. The servers (uvicorn,
hypercorn) run start-up and shut-down from one task, which the manager's task group
requires.

Nothing here imports a framework: the helpers only use what each framework calls.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol, TypeVar

from .._api.manager import WorkManager
from .._core.errors import InvalidRequestError

__all__ = ("EXTENSION_KEY", "STATE_KEY", "QuartLike", "init_quart", "lifespan")

#: The key of the manager in the lifespan state (``request.state.work_manager`` in
#: Starlette and FastAPI).
STATE_KEY = "work_manager"
#: The key of the manager in a Quart app's ``extensions``.
EXTENSION_KEY = "wm_async"

_Serving = TypeVar("_Serving", bound=Callable[[], AsyncGenerator[None, None]])


def _check(manager: object) -> WorkManager:
    if not isinstance(manager, WorkManager):
        raise InvalidRequestError("manager", manager, "expected a WorkManager")
    return manager


def lifespan(
    manager: WorkManager,
) -> Callable[[object], AbstractAsyncContextManager[dict[str, WorkManager]]]:
    """A lifespan for Starlette and FastAPI that runs ``manager`` while the app serves.

    The lifespan state holds the manager under :data:`STATE_KEY`, so handlers reach it
    as ``request.state.work_manager``.

    :param manager: a manager that is not running
    :return: the callable to pass as ``lifespan=``
    :raises InvalidRequestError: if ``manager`` is not a WorkManager
    """
    checked = _check(manager)

    @asynccontextmanager
    async def work_manager_lifespan(app: object) -> AsyncIterator[dict[str, WorkManager]]:
        async with checked:
            yield {STATE_KEY: checked}

    return work_manager_lifespan


class QuartLike(Protocol):
    """What :func:`init_quart` uses of a Quart app (``quart.Quart`` has both)."""

    @property
    def extensions(self) -> dict[str, object]:
        """Per-extension state, keyed by name."""

    def while_serving(self, func: _Serving) -> _Serving:
        """Register a generator function that runs around serving."""


def init_quart(app: QuartLike, manager: WorkManager) -> None:
    """Run ``manager`` while the Quart ``app`` serves, and make it reachable as
    ``app.extensions["wm_async"]`` (:data:`EXTENSION_KEY`).

    It registers a ``while_serving`` generator: Quart runs its start-up part after the
    ``before_serving`` functions and its shut-down part before the ``after_serving``
    ones.

    :param app: a ``quart.Quart`` application
    :param manager: a manager that is not running
    :raises InvalidRequestError: if ``manager`` is not a WorkManager, or ``app`` already
        has one
    """
    checked = _check(manager)
    if EXTENSION_KEY in app.extensions:
        raise InvalidRequestError(
            "app", app, "a WorkManager is already set up on it; call init_quart() once per app"
        )
    app.extensions[EXTENSION_KEY] = checked

    async def run_work_manager() -> AsyncGenerator[None, None]:
        async with checked:
            yield

    app.while_serving(run_work_manager)
