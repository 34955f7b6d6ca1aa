"""A FastAPI app with background work: ``POST /reports`` enqueues a report,
``GET /reports/{id}`` says how it is doing.

Run it, then try it::

    uvicorn examples.fastapi_app:app          # serves on http://127.0.0.1:8000
    curl -X POST 'http://127.0.0.1:8000/reports?seconds=5'
    curl http://127.0.0.1:8000/reports/<id>

The manager starts with the app's lifespan and stops gracefully with it: a report
still running after ``shutdown_grace`` goes back to ENQUEUED and runs again on the next
start.
"""

from __future__ import annotations

import os

import anyio
from fastapi import FastAPI, HTTPException, Request

import wm_async as wm
from wm_async.integrations.asgi import lifespan


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


def create_app(manager: wm.WorkManager) -> FastAPI:
    """The application: routes, and the manager run by its lifespan."""
    app = FastAPI(lifespan=lifespan(manager))

    @app.post("/reports", status_code=202)
    async def create_report(request: Request, seconds: float = 1.0) -> dict[str, str]:
        manager: wm.WorkManager = request.state.work_manager
        work = wm.OneTimeWorkRequest("report", input={"seconds": seconds}, tags={"reports"})
        await manager.enqueue(work)
        return {"id": str(work.id)}

    @app.get("/reports/{work_id}")
    async def get_report(request: Request, work_id: str) -> dict[str, object]:
        manager: wm.WorkManager = request.state.work_manager
        try:
            info = await manager.get_work_info(work_id)
        except wm.InvalidRequestError:  # not a UUID
            info = None
        if info is None:
            raise HTTPException(status_code=404, detail="no such report")
        return info.to_dict()

    return app


app = create_app(create_manager(os.environ.get("WM_ASYNC_STORE", "sqlite:///wm_async.db")))
