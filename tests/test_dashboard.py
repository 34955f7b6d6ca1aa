"""The dashboard's pages, actions and security through HTTP (an in-process ASGI client;
the live updates and the browser are in tests/test_dashboard_browser.py)."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import PgSchema

import wm_async as wm
from wm_async.dashboard import Dashboard, Request, mount
from wm_async.testing import VirtualClock

TOKEN = "t0ken-for-the-tests-0123456789"


def make(store: str = "memory://", clock: VirtualClock | None = None) -> wm.WorkManager:
    manager = wm.WorkManager(store=store, clock=clock or VirtualClock(), shutdown_grace=0)

    @manager.worker("ok")
    async def ok(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"api_key": "sk-live-123", "rows": 3})

    @manager.worker("bad")
    async def bad(ctx: wm.WorkContext) -> None:
        raise ValueError("boom")

    return manager


@asynccontextmanager
async def client(
    dashboard: Dashboard, *, remote: bool = False, login: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(
        app=dashboard, client=("203.0.113.9" if remote else "127.0.0.1", 5555)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
        if login and dashboard._guard.token is not None:
            r = await c.get(f"/login?token={TOKEN}")
            assert r.status_code == 303
        yield c


def csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def test_pages_render_counts_filters_and_a_work() -> None:
    manager = make()
    req = wm.OneTimeWorkRequest("ok", input={"password": "hunter2", "n": 1}, tags={"sync"})
    failed = wm.OneTimeWorkRequest("bad")
    async with manager, client(Dashboard(manager, token=TOKEN)) as c:
        await manager.enqueue(req, failed)
        await manager.wait(req.id)
        await manager.wait(failed.id)
        r = await c.get("/")
        assert r.status_code == 200
        assert 'data-worker="ok"' in r.text
        assert 'data-worker="bad"' in r.text
        assert "<svg" in r.text  # the charts, inline
        assert r.headers["content-security-policy"].startswith("default-src 'none'")
        r = await c.get("/works", params={"state": "FAILED"})
        assert str(failed.id) in r.text
        assert str(req.id) not in r.text
        r = await c.get("/works", params={"tag": "sync"})
        assert str(req.id) in r.text
        assert str(failed.id) not in r.text
        r = await c.get("/works", params={"q": str(req.id)[:20]})
        assert str(req.id) in r.text
        named = wm.OneTimeWorkRequest("ok", initial_delay=3600)
        await manager.enqueue_unique_work("nightly", "KEEP", named)
        r = await c.get("/works", params={"unique": "nightly"})
        assert re.findall(r'<tr id="w-([0-9a-f-]+)"', r.text) == [str(named.id)]
        r = await c.get(
            "/works", params={"since": "2030-01-01T00:00", "until": "2030-01-02T00:00"}
        )
        assert len(re.findall(r'<tr id="w-', r.text)) == 3  # the virtual clock's day
        r = await c.get("/works", params={"until": "2029-12-31T23:59"})
        assert "no works match" in r.text
        r = await c.get(f"/works/{req.id}")
        assert r.status_code == 200
        assert "SUCCEEDED" in r.text
        assert "hunter2" not in r.text  # redacted by default
        assert "sk-live-123" not in r.text
        assert "&quot;rows&quot;: 3" in r.text
        assert "finished: SUCCEEDED" in r.text  # explain()
        r = await c.get(f"/works/{failed.id}")
        assert "ValueError: boom" in r.text
        assert 'data-action="run-again"' in r.text


async def test_pagination_is_keyset_and_stable() -> None:
    clock = VirtualClock()
    manager = make(clock=clock)
    async with manager, client(Dashboard(manager, token=TOKEN)) as c:
        reqs = []
        for _ in range(5):
            req = wm.OneTimeWorkRequest("ok", initial_delay=3600)
            reqs.append(req)
            await manager.enqueue(req)
            await clock.advance(1)
        seen: list[str] = []
        url = "/works?limit=2"
        while True:
            r = await c.get(url)
            seen += re.findall(r'<tr id="w-([0-9a-f-]+)"', r.text)
            found = re.search(r'id="next" href="([^"]+)"', r.text)
            if not found:
                break
            url = found.group(1).replace("&amp;", "&")
        assert seen == [str(r.id) for r in reversed(reqs)]


async def test_chain_graph_explain_and_redaction_hook() -> None:
    manager = make()
    a, b = wm.OneTimeWorkRequest("bad"), wm.OneTimeWorkRequest("ok")

    def redact(info: wm.WorkInfo, field: str, data: object) -> dict[str, str]:
        return {"hidden": field}

    dashboard = Dashboard(manager, token=TOKEN, redact=redact)
    async with manager, client(dashboard) as c:
        await manager.begin_with(a).then(b).enqueue()
        await manager.wait(b.id)
        r = await c.get(f"/works/{b.id}")
        assert '<svg class="graph"' in r.text
        assert f'href="/works/{a.id}"' in r.text
        assert "&quot;hidden&quot;: &quot;input&quot;" in r.text
        assert "waiting" not in r.text or "FAILED" in r.text


async def test_actions_cancel_run_now_run_again_prune_pause() -> None:
    clock = VirtualClock()
    manager = make(clock=clock)
    later = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    other = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    async with manager, client(Dashboard(manager, token=TOKEN)) as c:
        await manager.enqueue(later, other)
        page = await c.get(f"/works/{later.id}")
        token = csrf(page.text)
        r = await c.post(
            "/actions/run-now",
            data={"id": str(later.id), "csrf": token, "next": f"/works/{later.id}"},
        )
        assert r.status_code == 303
        assert (await manager.wait(later.id, timeout=5)).state is wm.WorkState.SUCCEEDED
        follow = await c.get(r.headers["location"])
        assert "the work is due now" in follow.text
        r = await c.post("/actions/cancel", data={"id": str(other.id), "csrf": token})
        assert r.status_code == 303
        info = await manager.get_work_info(other.id)
        assert info is not None
        assert info.state is wm.WorkState.CANCELLED
        r = await c.post("/actions/run-again", data={"id": str(other.id), "csrf": token})
        assert r.status_code == 303
        new_id = r.headers["location"].split("/works/")[1].split("?")[0]
        new = await manager.get_work_info(new_id)
        assert new is not None
        assert new.state is wm.WorkState.ENQUEUED
        r = await c.post("/actions/pause", data={"worker": "ok", "csrf": token})
        assert r.status_code == 303
        assert await manager.paused_workers() == {"ok"}
        r = await c.post("/actions/resume", data={"worker": "ok", "csrf": token})
        assert await manager.paused_workers() == frozenset()
        r = await c.post("/actions/prune", data={"csrf": token})
        assert r.status_code == 303
        assert await manager.get_work_info(later.id) is None


async def test_forged_and_bad_requests_get_4xx_and_change_nothing() -> None:
    manager = make()
    held = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    dashboard = Dashboard(manager, token=TOKEN)
    async with manager, client(dashboard) as c, client(dashboard, login=False) as anonymous:
        await manager.enqueue(held)
        token = csrf((await c.get("/")).text)
        wid = str(held.id)
        cases = [
            (c.post("/actions/cancel", data={"id": wid}), 403),  # no CSRF token
            (c.post("/actions/cancel", data={"id": wid, "csrf": "0" * 64}), 403),
            (
                c.post(
                    "/actions/cancel",
                    data={"id": wid, "csrf": token},
                    headers={"origin": "http://evil.example"},
                ),
                403,
            ),
            (
                c.post(
                    "/actions/cancel",
                    data={"id": wid, "csrf": token},
                    headers={"sec-fetch-site": "cross-site"},
                ),
                403,
            ),
            (anonymous.post("/actions/cancel", data={"id": wid, "csrf": token}), 401),
            (c.get(f"/actions/cancel?id={wid}"), 405),
            (c.post("/actions/explode", data={"csrf": token}), 404),
            (c.post("/actions/cancel", data={"id": "not-a-uuid", "csrf": token}), 400),
            (c.post("/actions/cancel", data={"id": str(uuid.uuid4()), "csrf": token}), 404),
            (c.post("/actions/run-again", data={"id": wid, "csrf": token}), 409),
            (c.post("/actions/pause", data={"worker": "nope", "csrf": token}), 404),
            (c.post("/actions/pause", data={"worker": "", "csrf": token}), 400),
            (
                c.post(
                    "/actions/cancel", content=b"{}", headers={"content-type": "application/json"}
                ),
                415,
            ),
            (c.post("/actions/cancel", data={"id": wid, "csrf": token, "pad": "x" * 20000}), 413),
            (c.get("/works/not-a-uuid"), 400),
            (c.get(f"/works/{uuid.uuid4()}"), 404),
            (c.get("/works?state=DONE"), 400),
            (c.get("/works?limit=100000"), 400),
            (c.get("/works?limit=-1"), 400),
            (c.get("/works?since=yesterday"), 400),
            (c.get("/works?before=garbage"), 400),
            (c.get("/works?colour=red"), 400),
            (c.get("/works?worker=%00"), 400),
            (c.get("/works?state=FAILED&state=SUCCEEDED"), 400),
            (c.get("/?window=7y"), 400),
            (c.get("/nowhere"), 404),
            (c.get("/events/works?ids=nope"), 400),
            (c.get(f"/events/work/{uuid.uuid4()}"), 404),
            (anonymous.get("/events/overview"), 401),
        ]
        for call, status in cases:
            r = await call
            assert r.status_code == status, (r.request.method, r.request.url, r.text)
            assert r.text.strip(), "an error says why"
        info = await manager.get_work_info(held.id)
        assert info is not None
        assert info.state is wm.WorkState.ENQUEUED  # nothing changed
        assert await manager.paused_workers() == frozenset()
        r = await anonymous.get("/")
        assert r.status_code == 303  # to the login page
        assert r.headers["location"].startswith("/login")
        r = await anonymous.get(f"/login?token={'x' * 20}")
        assert r.status_code == 403


async def test_read_only_and_no_token_offer_no_action() -> None:
    manager = make()
    held = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    for dashboard in (Dashboard(manager, token=TOKEN, read_only=True), Dashboard(manager)):
        async with manager, client(dashboard) as c:
            await manager.enqueue(held) if await manager.get_work_info(held.id) is None else None
            page = await c.get(f"/works/{held.id}")
            assert page.status_code == 200
            assert "data-action" not in page.text
            assert "read-only" in page.text
            token = csrf(page.text) if 'name="csrf"' in page.text else "x"
            r = await c.post("/actions/cancel", data={"id": str(held.id), "csrf": token})
            assert r.status_code == 403
            info = await manager.get_work_info(held.id)
            assert info is not None
            assert info.state is wm.WorkState.ENQUEUED


async def test_no_auth_serves_only_loopback_unless_allowed() -> None:
    manager = make()
    async with manager:
        async with client(Dashboard(manager), remote=True) as c:
            r = await c.get("/")
            assert r.status_code == 403
            assert "serves only clients on this host" in r.text
        async with client(Dashboard(manager, allow_remote=True), remote=True) as c:
            assert (await c.get("/")).status_code == 200
        async with client(Dashboard(manager, token=TOKEN), remote=True) as c:
            assert (await c.get("/")).status_code == 200  # logged in with the token


async def test_authorize_hook_and_mount_under_a_prefix() -> None:
    manager = make()
    allowed: list[str] = []

    async def authorize(request: Request) -> bool:
        allowed.append(request.path)
        return request.headers.get("x-user") == "admin"

    async def fallback(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the prefix should have been served by the dashboard")

    app = mount(fallback, "/wm", Dashboard(manager, authorize=authorize))
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with manager, httpx.AsyncClient(transport=transport, base_url="http://h") as c:
        assert (await c.get("/wm/")).status_code == 403
        r = await c.get("/wm/works", headers={"x-user": "admin"})
        assert r.status_code == 200
        assert 'href="/wm/static/app.css"' in r.text
        assert allowed[-1] == "/works"
        r = await c.get("/wm/", headers={"x-user": "admin"})
        assert 'data-action="prune"' in r.text  # the hook protects it: actions offered


def test_bad_dashboard_arguments_raise() -> None:
    manager = make()
    with pytest.raises(wm.InvalidRequestError):
        Dashboard(manager, token="short")
    with pytest.raises(wm.InvalidRequestError):
        Dashboard(object())  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError):
        Dashboard(manager, token=TOKEN, authorize=lambda r: True)
    with pytest.raises(wm.InvalidRequestError):
        mount(Dashboard(manager), "wm/", Dashboard(manager))


async def test_sqlite_dashboard_beside_a_worker_process(tmp_path: Path) -> None:
    """A producer's dashboard reads what a scheduling manager writes to the file."""
    url = f"sqlite:///{tmp_path / 'wm.db'}"
    worker = make(url, clock=None)
    req = wm.OneTimeWorkRequest("ok")
    viewer = wm.WorkManager(store=url, run_work=False)
    async with worker, viewer, client(Dashboard(viewer, token=TOKEN)) as c:
        await worker.enqueue(req)
        await worker.wait(req.id)
        r = await c.get(f"/works/{req.id}")
        assert "SUCCEEDED" in r.text
        r = await c.get("/")
        assert 'data-worker="ok"' in r.text


async def test_aiohttp_sub_app_serves_pages_and_a_live_feed() -> None:
    from aiohttp import ClientSession, CookieJar, web
    from aiohttp.test_utils import TestServer

    from wm_async.dashboard.aiohttp import setup as setup_dashboard

    manager = make(clock=None)
    app = web.Application()
    setup_dashboard(app, Dashboard(manager, token=TOKEN), prefix="/wm")
    held = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    async with manager, TestServer(app, host="127.0.0.1") as server:
        await manager.enqueue(held)
        base = f"http://127.0.0.1:{server.port}/wm"
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as s:  # an IP host
            r = await s.get(f"{base}/login?token={TOKEN}")
            assert r.status == 200  # followed to the overview
            assert 'data-worker="ok"' in await r.text()
            r = await s.get(f"{base}/works/{held.id}")
            assert "ENQUEUED" in await r.text()
            async with s.get(f"{base}/events/work/{held.id}") as feed:
                assert feed.headers["content-type"].startswith("text/event-stream")
                first = b""
                while b"ENQUEUED" not in first:
                    first += await feed.content.readany()
                await manager.cancel_work_by_id(held.id)
                later = b""
                while b"CANCELLED" not in later:
                    later += await feed.content.readany()


@pytest.mark.postgres
async def test_postgres_dashboard_beside_a_worker_process(schema: PgSchema) -> None:
    worker = make(schema.url(), clock=None)
    req = wm.OneTimeWorkRequest("bad")
    viewer = wm.WorkManager(store=schema.url(), run_work=False)
    async with worker, viewer, client(Dashboard(viewer, token=TOKEN)) as c:
        await worker.enqueue(req)
        await worker.wait(req.id)
        r = await c.get("/works", params={"state": "FAILED"})
        assert str(req.id) in r.text
        token = csrf(r.text)
        r = await c.post("/actions/run-again", data={"id": str(req.id), "csrf": token})
        assert r.status_code == 303
        new_id = r.headers["location"].split("/works/")[1].split("?")[0]
        again = await worker.wait(new_id, timeout=30)  # the worker process runs it
        assert again.state is wm.WorkState.FAILED


async def test_the_overview_names_a_work_running_longer_than_usual() -> None:
    clock = VirtualClock()
    manager = make(clock=clock)
    gate = anyio.Event()

    @manager.worker("report")
    async def report(ctx: wm.WorkContext) -> None:
        if ctx.input.get("stuck"):
            await gate.wait()  # the usual run takes no time (virtual)

    quick = [wm.OneTimeWorkRequest("report") for _ in range(3)]
    stuck = wm.OneTimeWorkRequest("report", input={"stuck": True})
    async with manager, client(Dashboard(manager, token=TOKEN)) as c:
        await manager.enqueue(*quick)
        await clock.advance(3)
        await manager.enqueue(stuck)
        await clock.advance(0.5)
        r = await c.get("/")
        assert "no work runs longer than usual" in r.text  # not yet a second longer
        await clock.advance(5)
        r = await c.get("/")
        assert f'href="/works/{stuck.id}"' in r.text
        assert "5.5 s" in r.text  # running for
        gate.set()
        await clock.advance(0)


def test_cli_dashboard_refuses_what_it_cannot_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from wm_async.cli import main

    assert main(["dashboard"]) == 2
    assert main(["dashboard", "--store", "memory://"]) == 2
    assert main(["dashboard", "--store", f"sqlite:///{tmp_path}/none.db"]) == 1
    assert (
        main(
            [
                "dashboard",
                "--store",
                f"sqlite:///{tmp_path}/x.db",
                "--read-only",
                "--host",
                "0.0.0.0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "refusing to serve 0.0.0.0 without a token" in err
    assert "no store at" in err


async def test_cli_dashboard_beside_a_worker_process_follows_its_writes(tmp_path: Path) -> None:
    """``wm-async dashboard`` in a process of its own, a scheduling manager in this one,
    on one SQLite file: the pages show the worker's works, and a work's live feed there
    reports a transition made here (the file's cross-process notifications)."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'wm.db'}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with make(url, clock=None) as manager:
        req = wm.OneTimeWorkRequest("ok")
        later = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
        await manager.enqueue(req, later)
        await manager.wait(req.id)
        proc = subprocess.Popen(  # noqa: ASYNC220  # read from a thread below
            [sys.executable, "-m", "wm_async", "dashboard", "--store", url, "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)},
        )
        try:
            assert proc.stdout is not None
            first = await anyio.to_thread.run_sync(proc.stdout.readline)
            assert f"on http://127.0.0.1:{port}/" in first
            line = await anyio.to_thread.run_sync(proc.stdout.readline)
            login = line.split("log in at ")[1].strip()
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(timeout=30) as c:
                with anyio.fail_after(30):
                    while True:
                        try:
                            r = await c.get(login, follow_redirects=True)
                            break
                        except httpx.ConnectError:
                            await anyio.sleep(0.1)
                assert r.status_code == 200
                assert 'data-worker="ok"' in r.text
                r = await c.get(f"{base}/works/{req.id}")
                assert "SUCCEEDED" in r.text
                assert 'data-action="run-again"' not in r.text  # it SUCCEEDED
                async with c.stream("GET", f"{base}/events/work/{later.id}") as feed:
                    seen = ""
                    with anyio.fail_after(30):
                        chunks = feed.aiter_text()
                        while 'data-state=\\"ENQUEUED\\"' not in seen:
                            seen += await chunks.__anext__()
                        await manager.run_now(later.id)  # here; the feed is there
                        while 'data-state=\\"SUCCEEDED\\"' not in seen:
                            seen += await chunks.__anext__()
        finally:
            proc.terminate()
            await anyio.to_thread.run_sync(proc.wait, 30)
            if proc.stdout is not None:
                proc.stdout.close()


async def test_mounted_in_starlette_and_quart() -> None:
    from quart import Quart
    from starlette.applications import Starlette
    from starlette.routing import Mount

    manager = make()
    dashboard = Dashboard(manager, token=TOKEN)
    quart = Quart(__name__)

    @quart.route("/")
    async def home() -> str:
        return "the app's own page"

    quart.asgi_app = mount(quart.asgi_app, "/wm", dashboard)  # type: ignore[method-assign]
    apps: dict[str, Any] = {
        "starlette": Starlette(routes=[Mount("/wm", app=dashboard)]),
        "quart": quart,
    }
    async with manager:
        for name, app in apps.items():
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://h") as c:
                r = await c.get(f"/wm/login?token={TOKEN}")
                assert r.status_code == 303, name
                assert r.headers["location"] == "/wm/", name
                r = await c.get("/wm/works")
                assert r.status_code == 200, name
                assert 'href="/wm/static/app.css"' in r.text, name
                if name == "quart":
                    assert (await c.get("/")).text == "the app's own page"


async def test_login_form_and_logout() -> None:
    manager = make()
    async with manager, client(Dashboard(manager, token=TOKEN), login=False) as c:
        page = await c.get("/login")
        assert page.status_code == 200
        token = csrf(page.text)
        r = await c.post("/login", data={"token": "wrong-token-000000000", "csrf": token})
        assert r.status_code == 403
        r = await c.post("/login", data={"token": TOKEN, "csrf": "0" * 64})
        assert r.status_code == 403  # a forged login form
        r = await c.post("/login", data={"token": TOKEN, "csrf": token, "next": "/works"})
        assert r.status_code == 303
        assert r.headers["location"] == "/works"
        assert (await c.get("/works")).status_code == 200
        r = await c.post("/login", data={"token": TOKEN, "csrf": token, "next": "//evil.example"})
        assert r.headers["location"] == "/"  # never off the dashboard
        r = await c.post("/logout", data={"csrf": token})
        assert r.status_code == 303
        assert (await c.get("/works")).status_code == 303  # to the login page again
        assert (
            await c.get("/works", headers={"authorization": f"Bearer {TOKEN}"})
        ).status_code == 200


async def test_metrics_are_served_from_wm_async_metrics() -> None:
    manager = make()
    async with manager, client(Dashboard(manager, token=TOKEN), login=False) as c:
        await manager.enqueue(wm.OneTimeWorkRequest("ok", initial_delay=3600))
        assert (await c.get("/metrics")).status_code == 401  # the pages' protection
        r = await c.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert 'wm_async_works{state="ENQUEUED",worker="ok"} 1.0' in r.text


async def test_markup_in_tags_inputs_and_errors_is_shown_as_text() -> None:
    manager = make()
    evil = "<img src=x onerror=alert(1)>"
    req = wm.OneTimeWorkRequest("bad", tags={evil}, input={"note": evil})
    async with manager, client(Dashboard(manager, token=TOKEN)) as c:
        await manager.enqueue(req)
        await manager.wait(req.id)
        for path in ("/", "/works", f"/works/{req.id}", f"/works?tag={evil}"):
            r = await c.get(path)
            assert r.status_code == 200, path
            assert evil not in r.text, path
        assert "&lt;img src=x onerror=alert(1)&gt;" in r.text
