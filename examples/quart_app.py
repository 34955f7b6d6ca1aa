"""A Quart app with background work: ``POST /reports`` enqueues a report,
``GET /reports/<id>`` says how it is doing.

Run it, then try it::

    hypercorn examples.quart_app:app          # serves on http://127.0.0.1:8000
    curl -X POST 'http://127.0.0.1:8000/reports?seconds=5'
    curl http://127.0.0.1:8000/reports/<id>

The manager starts before the app serves and stops gracefully after it: a report still
running after ``shutdown_grace`` goes back to ENQUEUED and runs again on the next start.
"""

from __future__ import annotations

import os

import anyio
from quart import Quart, abort, current_app, request

import wm_async as wm
from wm_async.integrations.asgi import (
    EXTENSION_KEY,
    init_quart,
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


def work_manager() -> wm.WorkManager:
    """The manager of the app handling the current request."""
    manager: wm.WorkManager = current_app.extensions[EXTENSION_KEY]
    return manager


def create_app(manager: wm.WorkManager) -> Quart:
    """The application: routes, and the manager run while it serves."""
    app = Quart(__name__)
    init_quart(app, manager)

    @app.post("/reports")
    async def create_report() -> tuple[dict[str, str], int]:
        seconds = request.args.get("seconds", 1.0, type=float)
        work = wm.OneTimeWorkRequest("report", input={"seconds": seconds}, tags={"reports"})
        await work_manager().enqueue(work)
        return {"id": str(work.id)}, 202

    @app.get("/reports/<work_id>")
    async def get_report(work_id: str) -> dict[str, object]:
        try:
            info = await work_manager().get_work_info(work_id)
        except wm.InvalidRequestError:  # not a UUID
            info = None
        if info is None:
            abort(404)
        return info.to_dict()

    return app


app = create_app(create_manager(os.environ.get("WM_ASYNC_STORE", "sqlite:///wm_async.db")))
