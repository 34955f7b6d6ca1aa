"""Run a :class:`~wm_async.WorkManager` for the lifetime of an aiohttp application.

::

    from aiohttp import web
    from wm_async.integrations.aiohttp import WORK_MANAGER, setup

    manager = wm.WorkManager(store="sqlite:///wm_async.db")
    app = web.Application()
    setup(app, manager)          # starts with the app, stops gracefully with it

    async def enqueue(request: web.Request) -> web.Response:
        manager = request.app[WORK_MANAGER]
        ...

The manager is started by a cleanup context, so it starts after the ``on_startup``
handlers and stops before the ``on_cleanup`` handlers, and a failure to start (another
manager holds the SQLite file, say) fails the application's start-up. aiohttp's runners
(``web.run_app``, ``AppRunner``, the test utilities) start and clean up an application
from one task, which the manager's task group requires.

This module needs aiohttp (``pip install 'wm_async[aiohttp]'``); ``import wm_async``
never imports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - the test extra installs aiohttp
    raise ImportError(
        f"wm_async.integrations.aiohttp needs aiohttp: pip install 'wm_async[aiohttp]' ({exc})"
    ) from exc

from .._api.manager import WorkManager
from .._core.errors import InvalidRequestError

__all__ = ("WORK_MANAGER", "setup")

#: The application key under which :func:`setup` stores the manager:
#: ``request.app[WORK_MANAGER]`` in a handler.
WORK_MANAGER: web.AppKey[WorkManager] = web.AppKey("wm_async.work_manager", WorkManager)


def setup(app: web.Application, manager: WorkManager) -> None:
    """Run ``manager`` while ``app`` runs, and make it reachable as
    ``app[WORK_MANAGER]``.

    The manager starts when the application starts and stops gracefully (running work
    gets ``shutdown_grace``, then goes back to ENQUEUED) when it shuts down.

    :param app: the application, before it is frozen (started)
    :param manager: a manager that is not running
    :raises InvalidRequestError: if ``manager`` is not a WorkManager, or ``app`` already
        has one
    """
    if not isinstance(manager, WorkManager):
        raise InvalidRequestError("manager", manager, "expected a WorkManager")
    if WORK_MANAGER in app:
        raise InvalidRequestError(
            "app", app, "a WorkManager is already set up on it; call setup() once per app"
        )
    app[WORK_MANAGER] = manager

    async def work_manager_context(app: web.Application) -> AsyncIterator[None]:
        async with manager:
            yield

    app.cleanup_ctx.append(work_manager_context)
