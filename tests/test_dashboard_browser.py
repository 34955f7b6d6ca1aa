"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright, never a downloaded browser) against a real server on loopback with a
SQLite store. Under ``CI=true`` a missing browser fails these tests; elsewhere it skips
them."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

import wm_async as wm
from wm_async.dashboard import Dashboard, mount

TOKEN = "browser-test-token-0123456789"
CHROMIUM = os.environ.get("WM_ASYNC_CHROMIUM", "/usr/bin/chromium")
_T = TypeVar("_T")


def _require_browser() -> None:
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        missing = f"playwright is not installed ({exc})"
    if missing is None and not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser tests cannot run under CI: {missing}")
        pytest.skip(missing)


class Server:
    """A manager on a SQLite file and two dashboards (``/rw`` with a token, ``/ro``
    read-only), served by uvicorn on a loopback port from a thread of their own."""

    def __init__(self, path: Path) -> None:
        self.manager = wm.WorkManager(store=f"sqlite:///{path}", shutdown_grace=0)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0

        @self.manager.worker("ok")
        async def ok(ctx: wm.WorkContext) -> wm.Result:
            await ctx.set_progress({"step": 1})
            return wm.Result.success({"rows": 3, "token": "secret-value"})

        @self.manager.worker("bad")
        async def bad(ctx: wm.WorkContext) -> None:
            raise ValueError("it broke")

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self._serve(),), daemon=True
        )
        self.thread.start()
        assert self.ready.wait(30), "the dashboard server did not start"

    async def _serve(self) -> None:
        import uvicorn

        async def nothing(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"not here"})

        app = mount(nothing, "/rw", Dashboard(self.manager, token=TOKEN))
        app = mount(app, "/ro", Dashboard(self.manager, token=TOKEN, read_only=True))
        self.sock = sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(32)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        async with self.manager:
            self.ready.set()
            await self.server.serve([sock])

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.loop.close()
        self.sock.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _require_browser()
    served = Server(tmp_path_factory.mktemp("dash") / "wm.db")
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    tab.goto(f"{server.base}/rw/login?token={TOKEN}")
    tab.on("dialog", lambda dialog: dialog.accept())
    yield tab
    context.close()


def enqueue(server: Server, *requests: wm.OneTimeWorkRequest) -> None:
    server.call(server.manager.enqueue(*requests))


def test_pages_render_and_filters_work(page: Any, server: Server) -> None:
    good, bad = wm.OneTimeWorkRequest("ok", tags={"reports"}), wm.OneTimeWorkRequest("bad")
    enqueue(server, good, bad)
    server.call(server.manager.wait(bad.id))
    server.call(server.manager.wait(good.id))
    page.goto(f"{server.base}/rw/")
    assert page.locator('tr[data-worker="ok"]').count() == 1
    assert page.locator("svg.chart").count() == 2
    page.goto(f"{server.base}/rw/works")
    page.select_option('select[name="state"]', "FAILED")
    page.click('form.filters button[type="submit"]')
    page.wait_for_url("**/works?state=FAILED*")
    rows = page.locator("#works tr[data-state]")
    assert rows.count() >= 1
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.state)")) == {"FAILED"}
    page.goto(f"{server.base}/rw/works/{good.id}")
    assert "secret-value" not in page.content()  # redacted
    assert page.locator("#live-work").get_attribute("data-state") == "SUCCEEDED"


def test_state_changes_on_screen_without_a_reload(page: Any, server: Server) -> None:
    later = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    enqueue(server, later)
    page.goto(f"{server.base}/rw/works/{later.id}")
    page.wait_for_selector("#live.on")
    page.evaluate("window.notReloaded = true")
    server.call(server.manager.run_now(later.id))
    page.wait_for_selector('#live-work[data-state="SUCCEEDED"]')
    assert page.evaluate("window.notReloaded") is True
    assert "SUCCEEDED" in page.inner_text("#timeline") or page.inner_text("#live-work")


def test_cancel_and_run_again_act(page: Any, server: Server) -> None:
    later = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    enqueue(server, later)
    page.goto(f"{server.base}/rw/works/{later.id}")
    page.click('button[data-action="cancel"]')
    page.wait_for_selector('#live-work[data-state="CANCELLED"]')
    info = server.call(server.manager.get_work_info(later.id))
    assert info is not None
    assert info.state is wm.WorkState.CANCELLED
    page.click('button[data-action="run-again"]')
    page.wait_for_selector("#flash")
    assert "enqueued again as the new work" in page.inner_text("#flash")
    new_id = page.url.split("/works/")[1].split("?")[0]
    assert new_id != str(later.id)
    again = server.call(server.manager.get_work_info(new_id))
    assert again is not None
    assert again.state is wm.WorkState.ENQUEUED


def test_an_action_without_a_token_is_refused(browser: Any, server: Server) -> None:
    later = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    enqueue(server, later)
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{server.base}/rw/works/{later.id}")
    assert "/rw/login" in tab.url  # not logged in: sent to the login page
    response = tab.request.post(
        f"{server.base}/rw/actions/cancel", form={"id": str(later.id), "csrf": "x"}
    )
    assert response.status == 401
    context.close()
    info = server.call(server.manager.get_work_info(later.id))
    assert info is not None
    assert info.state is wm.WorkState.ENQUEUED


def test_read_only_hides_actions(page: Any, server: Server) -> None:
    later = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1))
    enqueue(server, later)
    page.goto(f"{server.base}/ro/login?token={TOKEN}")
    page.goto(f"{server.base}/ro/works/{later.id}")
    assert page.locator("#live-work").get_attribute("data-state") == "ENQUEUED"
    assert page.locator("button[data-action]").count() == 0
    page.goto(f"{server.base}/ro/")
    assert page.locator("button[data-action]").count() == 0


def test_the_list_and_the_overview_update_live(page: Any, server: Server) -> None:
    later = wm.OneTimeWorkRequest("ok", initial_delay=timedelta(hours=1), tags={"live"})
    enqueue(server, later)
    page.goto(f"{server.base}/rw/works?tag=live")
    page.wait_for_selector("#live.on")
    page.evaluate("window.notReloaded = true")
    server.call(server.manager.run_now(later.id))
    page.wait_for_selector(f'tr#w-{later.id}[data-state="SUCCEEDED"]')
    assert page.evaluate("window.notReloaded") is True
    page.goto(f"{server.base}/rw/")
    page.wait_for_selector("#live.on")
    page.evaluate("window.notReloaded = true")
    before = page.get_attribute("#overview", "data-now")
    paused = wm.OneTimeWorkRequest("bad")
    server.call(server.manager.pause_worker("bad"))
    enqueue(server, paused)
    for _ in range(150):  # the overview is pushed every 2 s (polled: the CSP forbids eval)
        if page.get_attribute("#overview", "data-now") != before:
            break
        page.wait_for_timeout(100)
    assert page.locator('tr[data-worker="bad"]').inner_text().find("(paused)") >= 0
    assert page.evaluate("window.notReloaded") is True
    server.call(server.manager.resume_worker("bad"))
