"""The web app of ``test_deploy.py`` (not a test module), served by real multi-process
servers: ``uvicorn --workers 4 _deploy_app:starlette_app``, ``gunicorn -w 4 -k
uvicorn_worker.UvicornWorker _deploy_app:starlette_app``, ``gunicorn -w 4 -k
aiohttp.GunicornWebWorker _deploy_app:aiohttp_app``, ``hypercorn --workers 2
_deploy_app:create_quart_app()``.

Every server process imports it and builds its own app around a default
``WorkManager(store="sqlite:///$WM_DEPLOY_DB")``, started by the framework's lifespan:
the first process to start schedules, the others stand by. The ``job`` worker appends
``start <id> <pid>`` and ``end <id> <pid>`` lines to ``$WM_DEPLOY_LOG`` (opened with
O_APPEND: the lines of concurrent processes never mix); a start-up hook appends
``ready <role> <pid>`` when the process's manager has started, and the app appends
``stopped <state> <pid>`` once the framework has stopped the manager.

Routes (the same in every framework; every answer carries the process's pid and role):

- ``POST /works?seconds=S`` with a JSON list of work ids: enqueue a ``job`` per id
  (409 if one of the ids exists already: an earlier try of the request stored them).
- ``GET /works``: ``{"works": {id: {"state", "attempts", "output"}}}`` for every job.
- ``GET /whoami``: the pid and the manager's role.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

import wm_async as wm

TAG = "deploy"


def record(event: str, subject: object) -> None:
    """Append ``event subject pid`` to the log, in one write."""
    fd = os.open(os.environ["WM_DEPLOY_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{event} {subject} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


def create_manager() -> wm.WorkManager:
    """This process's manager, with the ``job`` worker."""
    manager = wm.WorkManager(store=f"sqlite:///{os.environ['WM_DEPLOY_DB']}", shutdown_grace=2)

    @manager.on_start
    async def ready(manager: wm.WorkManager) -> None:
        record("ready", manager.role)

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> wm.Result:
        record("start", ctx.id)
        await anyio.sleep(float(ctx.input["seconds"]))
        record("end", ctx.id)
        return wm.Result.success({"pid": os.getpid()})

    return manager


def whoami(manager: wm.WorkManager) -> dict[str, Any]:
    return {"pid": os.getpid(), "role": manager.role}


async def enqueue(manager: wm.WorkManager, ids: list[str], seconds: float) -> tuple[Any, int]:
    """Enqueue one job per id, atomically: (answer, HTTP status)."""
    works = [
        wm.OneTimeWorkRequest("job", id=uuid.UUID(i), input={"seconds": seconds}, tags={TAG})
        for i in ids
    ]
    try:
        await manager.enqueue(*works)
    except wm.InvalidRequestError as exc:  # an id that exists: stored by an earlier try
        return {**whoami(manager), "error": str(exc)}, 409
    return whoami(manager), 202


async def works(manager: wm.WorkManager) -> dict[str, Any]:
    infos = await manager.get_work_infos(wm.WorkQuery(tags={TAG}))
    return {
        **whoami(manager),
        "works": {
            str(info.id): {
                "state": info.state.value,
                "attempts": info.run_attempt_count,
                "output": dict(info.output),
            }
            for info in infos
        },
    }


def create_starlette_app() -> Any:
    """For uvicorn and gunicorn's uvicorn workers: the manager runs in the lifespan."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from wm_async.integrations.asgi import lifespan

    manager = create_manager()

    async def post_works(request: Request) -> JSONResponse:
        seconds = float(request.query_params.get("seconds", "0"))
        body, status = await enqueue(manager, await request.json(), seconds)
        return JSONResponse(body, status_code=status)

    async def get_works(request: Request) -> JSONResponse:
        return JSONResponse(await works(manager))

    async def get_whoami(request: Request) -> JSONResponse:
        return JSONResponse(whoami(manager))

    routes = [
        Route("/works", post_works, methods=["POST"]),
        Route("/works", get_works, methods=["GET"]),
        Route("/whoami", get_whoami),
    ]
    manager_lifespan = lifespan(manager)

    @asynccontextmanager
    async def app_lifespan(app: object) -> AsyncIterator[dict[str, wm.WorkManager]]:
        async with manager_lifespan(app) as state:
            yield state
        record("stopped", manager.state.value)

    return Starlette(routes=routes, lifespan=app_lifespan)


def create_aiohttp_app() -> Any:
    """For gunicorn's aiohttp workers: the manager runs in a cleanup context."""
    from aiohttp import web

    from wm_async.integrations.aiohttp import WORK_MANAGER, setup

    async def post_works(request: web.Request) -> web.Response:
        seconds = float(request.query.get("seconds", "0"))
        manager = request.app[WORK_MANAGER]
        body, status = await enqueue(manager, await request.json(), seconds)
        return web.json_response(body, status=status)

    async def get_works(request: web.Request) -> web.Response:
        return web.json_response(await works(request.app[WORK_MANAGER]))

    async def get_whoami(request: web.Request) -> web.Response:
        return web.json_response(whoami(request.app[WORK_MANAGER]))

    async def stopped(app: web.Application) -> None:  # after the manager's cleanup context
        record("stopped", app[WORK_MANAGER].state.value)

    app = web.Application()
    setup(app, create_manager())
    app.on_cleanup.append(stopped)
    app.router.add_post("/works", post_works)
    app.router.add_get("/works", get_works)
    app.router.add_get("/whoami", get_whoami)
    return app


def create_quart_app() -> Any:
    """For hypercorn: the manager runs while Quart serves."""
    from quart import Quart, request

    from wm_async.integrations.asgi import init_quart

    manager = create_manager()
    app = Quart(__name__)
    init_quart(app, manager)

    @app.after_serving  # after the manager has stopped
    async def stopped() -> None:
        record("stopped", manager.state.value)

    @app.post("/works")
    async def post_works() -> tuple[Any, int]:
        seconds = request.args.get("seconds", 0.0, type=float)
        return await enqueue(manager, await request.get_json(), seconds)

    @app.get("/works")
    async def get_works() -> Any:
        return await works(manager)

    @app.get("/whoami")
    async def get_whoami() -> Any:
        return whoami(manager)

    return app


_FACTORIES = {
    "starlette_app": create_starlette_app,
    "aiohttp_app": create_aiohttp_app,
    "quart_app": create_quart_app,
}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Build only the app the server asks for (one manager per process)."""
    if name not in _FACTORIES:
        raise AttributeError(name)
    if name not in _built:
        _built[name] = _FACTORIES[name]()
    return _built[name]
