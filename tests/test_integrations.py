"""The framework integrations, through the examples that use them: a request enqueues a
report, the work runs, a later request sees it SUCCEEDED; shutting the app down puts an
interrupted run back to ENQUEUED.

aiohttp runs on its test server, FastAPI on a real uvicorn server, both on loopback;
Quart through its test app, which runs the lifespan as a server does.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import types
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import wm_async as wm
from wm_async.integrations import aiohttp as wm_aiohttp
from wm_async.integrations import asgi as wm_asgi
from wm_async.stores.sqlite import SQLiteStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Bounds every wait on a server or a work (real time; a loaded machine is slow).
TIMEOUT = 30


def load_example(name: str) -> types.ModuleType:
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"wm_async_example_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclass-like introspection (pydantic) looks here
    spec.loader.exec_module(module)
    return module


async def stored(db: Path, work_id: str) -> wm.WorkInfo:
    """The work's WorkInfo as the store holds it (after the app has stopped)."""
    async with SQLiteStore(db) as store:
        [record] = await store.get([work_id])
    return record.to_info()


def state_of(manager: wm.WorkManager) -> wm.RunState:
    """The manager's run state (a call, so mypy does not narrow it across awaits)."""
    return manager.state


async def wait_for_state(manager: wm.WorkManager, work_id: str, state: wm.WorkState) -> None:
    with anyio.fail_after(TIMEOUT):
        async with manager.watch(wm.WorkQuery(ids={work_id})) as infos:
            async for info in infos:
                if info.state is state:
                    return


# -- aiohttp


@asynccontextmanager
async def aiohttp_client(
    app: web.Application,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    server = TestServer(app, host="127.0.0.1")
    client: TestClient[web.Request, web.Application] = TestClient(server)
    async with server, client:
        yield client


async def test_aiohttp_request_enqueues_work_and_a_later_one_sees_it_succeed(
    tmp_path: Path,
) -> None:
    example = load_example("aiohttp_app")
    manager: wm.WorkManager = example.create_manager(f"sqlite:///{tmp_path / 'wm.db'}")
    app: web.Application = example.create_app(manager)
    assert app[wm_aiohttp.WORK_MANAGER] is manager

    with anyio.fail_after(TIMEOUT):
        async with aiohttp_client(app) as client:
            assert state_of(manager) is wm.RunState.STARTED

            created = await client.post("/reports", params={"seconds": "0.05"})
            assert created.status == 202
            work_id = (await created.json())["id"]
            await manager.wait(work_id)

            report = await client.get(f"/reports/{work_id}")
            assert report.status == 200
            body = await report.json()
            assert body["state"] == "SUCCEEDED"
            assert body["output"] == {"rows": 42}
            assert body["run_attempt_count"] == 1

            missing = await client.get(f"/reports/{uuid.uuid4()}")
            assert missing.status == 404
    assert state_of(manager) is wm.RunState.STOPPED


async def test_aiohttp_shutdown_re_enqueues_interrupted_work(tmp_path: Path) -> None:
    db = tmp_path / "wm.db"
    example = load_example("aiohttp_app")
    manager: wm.WorkManager = example.create_manager(f"sqlite:///{db}", shutdown_grace=0.05)
    app: web.Application = example.create_app(manager)

    with anyio.fail_after(TIMEOUT):
        async with aiohttp_client(app) as client:
            created = await client.post("/reports", params={"seconds": "3600"})
            work_id = (await created.json())["id"]
            await wait_for_state(manager, work_id, wm.WorkState.RUNNING)
            running = await (await client.get(f"/reports/{work_id}")).json()
            assert running["state"] == "RUNNING"

    info = await stored(db, work_id)
    assert info.state is wm.WorkState.ENQUEUED
    assert info.stop_reason is wm.StopReason.SHUTDOWN
    assert info.run_attempt_count == 1


def test_aiohttp_setup_refuses_a_second_manager(tmp_path: Path) -> None:
    app = web.Application()
    wm_aiohttp.setup(app, wm.WorkManager(store="memory://"))

    with pytest.raises(wm.InvalidRequestError, match="already set up"):
        wm_aiohttp.setup(app, wm.WorkManager(store="memory://"))
    with pytest.raises(wm.InvalidRequestError, match="expected a WorkManager"):
        wm_aiohttp.setup(web.Application(), "memory://")  # type: ignore[arg-type]


async def test_aiohttp_app_fails_to_start_when_the_manager_cannot(tmp_path: Path) -> None:
    db = tmp_path / "wm.db"
    db.write_bytes(b"not a database, " * 1024)  # the manager cannot open it
    app = web.Application()
    wm_aiohttp.setup(app, wm.WorkManager(store=f"sqlite:///{db}"))

    with anyio.fail_after(TIMEOUT):
        with pytest.raises(wm.StoreCorruptError):
            async with TestServer(app, host="127.0.0.1"):
                pass  # pragma: no cover - start-up fails


# -- Starlette / FastAPI on uvicorn


@asynccontextmanager
async def uvicorn_serving(app: object) -> AsyncIterator[httpx.AsyncClient]:
    """Serve ``app`` with uvicorn on a loopback port; yield a client for it."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    # Listening before uvicorn starts: a request made now waits in the backlog until the
    # lifespan has started the manager and uvicorn serves, so no readiness poll is needed.
    sock.listen(16)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                yield client
            server.should_exit = True
    finally:
        sock.close()


async def test_fastapi_request_enqueues_work_and_a_later_one_sees_it_succeed(
    tmp_path: Path,
) -> None:
    example = load_example("fastapi_app")
    manager: wm.WorkManager = example.create_manager(f"sqlite:///{tmp_path / 'wm.db'}")
    app = example.create_app(manager)

    with anyio.fail_after(TIMEOUT):
        async with uvicorn_serving(app) as client:
            created = await client.post("/reports", params={"seconds": "0.05"})
            assert created.status_code == 202
            work_id = created.json()["id"]
            await manager.wait(work_id)
            report = (await client.get(f"/reports/{work_id}")).json()
            assert report["state"] == "SUCCEEDED"
            assert report["output"] == {"rows": 42}

            missing = await client.get(f"/reports/{uuid.uuid4()}")
            assert missing.status_code == 404


async def test_fastapi_shutdown_re_enqueues_interrupted_work(tmp_path: Path) -> None:
    db = tmp_path / "wm.db"
    example = load_example("fastapi_app")
    manager: wm.WorkManager = example.create_manager(f"sqlite:///{db}", shutdown_grace=0.05)
    app = example.create_app(manager)

    with anyio.fail_after(TIMEOUT):
        async with uvicorn_serving(app) as client:
            created = await client.post("/reports", params={"seconds": "3600"})
            work_id = created.json()["id"]
            await wait_for_state(manager, work_id, wm.WorkState.RUNNING)
            running = (await client.get(f"/reports/{work_id}")).json()
            assert running["state"] == "RUNNING"

    info = await stored(db, work_id)
    assert info.state is wm.WorkState.ENQUEUED
    assert info.stop_reason is wm.StopReason.SHUTDOWN


async def test_starlette_lifespan_puts_the_manager_in_request_state() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    manager = wm.WorkManager(store="memory://")

    async def state(request: Request) -> JSONResponse:
        found = request.state.work_manager
        return JSONResponse({"same": found is manager, "state": found.state.value})

    app = Starlette(routes=[Route("/", state)], lifespan=wm_asgi.lifespan(manager))
    with anyio.fail_after(TIMEOUT):
        async with uvicorn_serving(app) as client:
            assert (await client.get("/")).json() == {"same": True, "state": "started"}
    assert state_of(manager) is wm.RunState.STOPPED


# -- Quart


async def test_quart_request_enqueues_work_and_a_later_one_sees_it_succeed(
    tmp_path: Path,
) -> None:
    example = load_example("quart_app")
    manager: wm.WorkManager = example.create_manager(f"sqlite:///{tmp_path / 'wm.db'}")
    app = example.create_app(manager)
    assert app.extensions[wm_asgi.EXTENSION_KEY] is manager

    with anyio.fail_after(TIMEOUT):
        async with app.test_app() as test_app:
            client = test_app.test_client()
            assert state_of(manager) is wm.RunState.STARTED
            created = await client.post("/reports", query_string={"seconds": "0.05"})
            assert created.status_code == 202
            work_id = (await created.get_json())["id"]
            await manager.wait(work_id)

            report = await client.get(f"/reports/{work_id}")
            body = await report.get_json()
            assert body["state"] == "SUCCEEDED"
            assert body["output"] == {"rows": 42}
            assert (await client.get(f"/reports/{uuid.uuid4()}")).status_code == 404
    assert state_of(manager) is wm.RunState.STOPPED


async def test_quart_shutdown_re_enqueues_interrupted_work(tmp_path: Path) -> None:
    db = tmp_path / "wm.db"
    example = load_example("quart_app")
    manager: wm.WorkManager = example.create_manager(f"sqlite:///{db}", shutdown_grace=0.05)
    app = example.create_app(manager)

    with anyio.fail_after(TIMEOUT):
        async with app.test_app() as test_app:
            client = test_app.test_client()
            created = await client.post("/reports", query_string={"seconds": "3600"})
            work_id = (await created.get_json())["id"]
            await wait_for_state(manager, work_id, wm.WorkState.RUNNING)

    info = await stored(db, work_id)
    assert info.state is wm.WorkState.ENQUEUED
    assert info.stop_reason is wm.StopReason.SHUTDOWN


def test_asgi_helpers_refuse_what_is_not_a_manager() -> None:
    from quart import Quart

    with pytest.raises(wm.InvalidRequestError, match="expected a WorkManager"):
        wm_asgi.lifespan("memory://")  # type: ignore[arg-type]
    app = Quart(__name__)
    wm_asgi.init_quart(app, wm.WorkManager(store="memory://"))
    with pytest.raises(wm.InvalidRequestError, match="already set up"):
        wm_asgi.init_quart(app, wm.WorkManager(store="memory://"))


def test_importing_wm_async_imports_no_framework() -> None:
    code = (
        "import sys, wm_async, wm_async.cli, wm_async.compat, wm_async.integrations.asgi\n"
        "loaded = {'aiohttp', 'fastapi', 'starlette', 'quart', 'uvicorn', 'httpx'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
