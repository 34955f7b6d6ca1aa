"""Changing works from outside the manager that runs them (``wm-async cancel``): the
running work stops at its next progress report, and the cancel stands."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async._cli.admin import cancel_records
from wm_async.stores._sqlite_peers import Notifier
from wm_async.stores.sqlite import SQLiteStore


async def stored(db: Path, work_id: str) -> wm.WorkInfo:
    async with SQLiteStore(db) as store:
        [record] = await store.get([work_id])
    return record.to_info()


async def test_a_cancel_written_by_another_process_stops_the_run_at_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "wm.db"
    # The poll never comes (an hour): the other process's notification stops the run.
    manager = wm.WorkManager(store=SQLiteStore(db, poll_interval=3600), shutdown_grace=0)
    started = anyio.Event()
    ended = anyio.Event()
    seen: list[wm.StopReason] = []

    @manager.worker("long")
    async def long(ctx: wm.WorkContext) -> wm.Result:
        started.set()
        try:
            await anyio.sleep_forever()  # no progress reported
        finally:
            seen.append(ctx.stop_reason)
            ended.set()
        return wm.Result.success({"late": True})

    request = wm.OneTimeWorkRequest("long")
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(request)
            await started.wait()
            # Another process: its own connection to the file, no manager.
            async with SQLiteStore(db) as other:
                cancelled = await cancel_records(other, await other.get([str(request.id)]))
            assert [r.state for r in cancelled] == [wm.WorkState.CANCELLED]
            await ended.wait()
        info = await stored(db, str(request.id))

    assert seen == [wm.StopReason.CANCELLED_BY_APP]
    assert info.state is wm.WorkState.CANCELLED
    assert info.stop_reason is wm.StopReason.CANCELLED_BY_APP


@pytest.mark.parametrize("report_progress", [True, False], ids=["progress", "silent"])
async def test_an_unannounced_cancel_stops_the_run_at_its_next_progress(
    tmp_path: Path, report_progress: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The other process's notification is lost, and the poll never comes (an hour).
    monkeypatch.setattr(Notifier, "committed", lambda self, ops: None)
    db = tmp_path / "wm.db"
    manager = wm.WorkManager(store=SQLiteStore(db, poll_interval=3600), shutdown_grace=0)
    started = anyio.Event()
    go_on = anyio.Event()
    ended = anyio.Event()
    seen: list[wm.StopReason] = []

    @manager.worker("long")
    async def long(ctx: wm.WorkContext) -> wm.Result:
        started.set()
        await go_on.wait()
        try:
            if report_progress:
                await ctx.set_progress({"step": 1})
                await anyio.sleep_forever()  # cancelled by the manager
        finally:
            seen.append(ctx.stop_reason)
            ended.set()
        return wm.Result.success({"late": True})

    request = wm.OneTimeWorkRequest("long")
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(request)
            await started.wait()
            # Another process: its own connection to the file, no manager.
            async with SQLiteStore(db) as other:
                cancelled = await cancel_records(other, await other.get([str(request.id)]))
            assert [r.state for r in cancelled] == [wm.WorkState.CANCELLED]
            go_on.set()
            await ended.wait()
        info = await stored(db, str(request.id))

    assert seen == [
        wm.StopReason.CANCELLED_BY_APP if report_progress else wm.StopReason.NOT_STOPPED
    ]
    assert info.state is wm.WorkState.CANCELLED
    assert info.stop_reason is wm.StopReason.CANCELLED_BY_APP
    assert dict(info.output) == {}  # a late result is discarded
