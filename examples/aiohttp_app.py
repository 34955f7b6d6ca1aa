"""An aiohttp app with background work: ``POST /reports`` enqueues a report,
``GET /reports/{id}`` says how it is doing.

Run it, then try it::

    python examples/aiohttp_app.py            # serves on http://127.0.0.1:8080
    curl -X POST 'http://127.0.0.1:8080/reports?seconds=5'
    curl http://127.0.0.1:8080/reports/<id>

Stopping the server (Ctrl-C) stops the manager gracefully: a report still running after
``shutdown_grace`` goes back to ENQUEUED and runs again on the next start.
"""

from __future__ import annotations

import os

import anyio
from aiohttp import web

import wm_async as wm
from wm_async.integrations.aiohttp import (
    WORK_MANAGER,
    setup,
)


def create_manager(store: str, *, shutdown_grace: float = 10.0) -> wm.WorkManager:
    """The app's manager and its workers."""
    manager = wm.WorkManager(store=store, shutdown_grace=shutdown_grace)

    @manager.worker("report")
    async def report(ctx: wm.WorkContext) -> wm.Result:
        seconds = float(ctx.input.get("seconds", 1))
        for percent in range(10, 101, 10):
            await anyio.sleep(seconds / 10)
            await ctx.set_progress({"percent": percent})
        return wm.Result.success({"rows": 42})

    return manager


async def create_report(request: web.Request) -> web.Response:
    try:
        seconds = float(request.query.get("seconds", "1"))
    except ValueError:
        raise web.HTTPBadRequest(text="seconds must be a number") from None
    work = wm.OneTimeWorkRequest("report", input={"seconds": seconds}, tags={"reports"})
    await request.app[WORK_MANAGER].enqueue(work)
    return web.json_response({"id": str(work.id)}, status=202)


async def get_report(request: web.Request) -> web.Response:
    try:
        info = await request.app[WORK_MANAGER].get_work_info(request.match_info["id"])
    except wm.InvalidRequestError:  # not a UUID
        info = None
    if info is None:
        raise web.HTTPNotFound(text="no such report")
    return web.json_response(info.to_dict())


def create_app(manager: wm.WorkManager) -> web.Application:
    """The application: routes, and the manager started and stopped with it."""
    app = web.Application()
    setup(app, manager)
    app.router.add_post("/reports", create_report)
    app.router.add_get("/reports/{id}", get_report)
    return app


if __name__ == "__main__":
    web.run_app(
        create_app(create_manager(os.environ.get("WM_ASYNC_STORE", "sqlite:///wm_async.db"))),
        host="127.0.0.1",
    )
