"""Regenerate the dashboard's screenshots in docs/img/ (docs/dashboard.md shows them).

A temporary SQLite store gets a few example works (succeeded, failed, waiting, running,
a chain, a paused worker), the dashboard is served on a loopback port, and headless
Chromium (Debian's ``chromium``, driven by Playwright) takes one picture of each page::

    python scripts/screenshots.py            # writes docs/img/dashboard-*.png
"""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wm_async as wm
from wm_async.dashboard import Dashboard

TOKEN = "screenshots-token-0123456789"
CHROMIUM = "/usr/bin/chromium"
OUT = ROOT / "docs" / "img"


async def populate(manager: wm.WorkManager, gate: asyncio.Event) -> dict[str, str]:
    """Example works; returns the ids the pictures show."""
    for i in range(40):
        await manager.enqueue(
            wm.OneTimeWorkRequest(
                "send_email", input={"to": f"user{i}@example.com"}, tags={"mail"}
            )
        )
    for i in range(6):
        await manager.enqueue(
            wm.OneTimeWorkRequest("charge_card", input={"order": i, "api_key": "sk-1"})
        )
    fetch = wm.OneTimeWorkRequest("fetch_feed", input={"url": "https://example.com/feed"})
    parse = wm.OneTimeWorkRequest("parse_feed")
    store_ = wm.OneTimeWorkRequest("store_items")
    notify = wm.OneTimeWorkRequest("send_email", input={"to": "ops@example.com"}, tags={"mail"})
    await manager.begin_with(fetch).then(parse).then(store_, notify).enqueue()
    slow = wm.OneTimeWorkRequest("build_report", input={"month": "2030-01"}, tags={"reports"})
    await manager.enqueue(slow)
    later = wm.OneTimeWorkRequest(
        "build_report",
        input={"month": "2030-02"},
        initial_delay=timedelta(hours=2),
        tags={"reports"},
    )
    await manager.enqueue(later)
    await manager.enqueue_unique_periodic_work(
        "nightly-cleanup", "KEEP", wm.PeriodicWorkRequest("cleanup", cron="0 3 * * *")
    )
    await asyncio.sleep(1.0)
    await manager.pause_worker("charge_card")
    await manager.enqueue(wm.OneTimeWorkRequest("charge_card", input={"order": 99}))
    await asyncio.sleep(0.5)
    failed = await manager.get_work_infos(wm.WorkQuery(states={wm.WorkState.FAILED}))
    return {"chain": str(parse.id), "running": str(slow.id), "failed": str(failed[0].id)}


def main() -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp()
    manager = wm.WorkManager(store=f"sqlite:///{tmp}/wm.db", shutdown_grace=0)
    gate = asyncio.Event()

    @manager.worker("send_email")
    async def send_email(ctx: wm.WorkContext) -> wm.Result:
        await asyncio.sleep(0.01)
        return wm.Result.success({"sent": True})

    @manager.worker("charge_card")
    async def charge_card(ctx: wm.WorkContext) -> wm.Result:
        if ctx.input["order"] % 3 == 0:
            raise ConnectionError("payment gateway timed out")
        return wm.Result.success({"charged": True})

    @manager.worker("fetch_feed")
    async def fetch_feed(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"items": 12})

    @manager.worker("parse_feed")
    async def parse_feed(ctx: wm.WorkContext) -> wm.Result:
        await ctx.set_progress({"parsed": 7, "of": 12})
        await gate.wait()
        return wm.Result.success()

    @manager.worker("store_items")
    async def store_items(ctx: wm.WorkContext) -> None:
        pass

    @manager.worker("build_report")
    async def build_report(ctx: wm.WorkContext) -> None:
        await ctx.set_progress({"pages": 3})
        await gate.wait()

    @manager.worker("cleanup")
    async def cleanup(ctx: wm.WorkContext) -> None:
        pass

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        state["port"] = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(Dashboard(manager, token=TOKEN), lifespan="off", log_config=None)
        )
        state["server"] = server
        async with manager:
            state["ids"] = await populate(manager, gate)
            ready.set()
            await server.serve([sock])
            gate.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(60)
    base = f"http://127.0.0.1:{state['port']}"
    ids = state["ids"]
    shots = {
        "overview": "/",
        "works": "/works",
        "works-filtered": "/works?worker=charge_card&state=FAILED",
        "work": f"/works/{ids['chain']}",
        "work-failed": f"/works/{ids['failed']}",
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/login?token={TOKEN}")
        for name, path in shots.items():
            page.goto(base + path)
            if page.get_attribute("body", "data-live"):
                page.wait_for_selector("#live.on")
            page.screenshot(path=str(OUT / f"dashboard-{name}.png"), full_page=True)
            print(f"wrote docs/img/dashboard-{name}.png")  # noqa: T201  # a script reports
        browser.close()
    state["server"].should_exit = True
    thread.join(30)


if __name__ == "__main__":
    main()
