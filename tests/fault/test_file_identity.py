"""The SQLite file is known by what it is, not by the path that led to it: a manager on
another path to a file a manager runs on (a symlink, a hard link) is refused, and a file
deleted, moved away or replaced under a running manager fails its writes instead of
taking them into a file that the next start will not see."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
import uuid
from pathlib import Path

import anyio
import anyio.abc
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

S = wm.WorkState

#: Bounds every wait on a subprocess (real time; a loaded machine is slow).
TIMEOUT = 60

#: A manager on argv[1] that runs the work argv[2], which holds until the process dies.
HOLDER = textwrap.dedent(
    """
    import sys, uuid
    import anyio
    import wm_async as wm

    async def main() -> None:
        manager = wm.WorkManager(f"sqlite:///{sys.argv[1]}", shutdown_grace=0)

        @manager.worker("hold")
        async def hold(ctx: wm.WorkContext) -> None:
            print("running", ctx.id, ctx.run_attempt_count, flush=True)
            await anyio.sleep_forever()

        async with manager:
            await manager.enqueue(wm.OneTimeWorkRequest("hold", id=uuid.UUID(sys.argv[2])))
            await anyio.sleep_forever()

    anyio.run(main)
    """
)


def row(db: Path, work_id: uuid.UUID) -> tuple[str, int]:
    """(state, run_attempt_count) of a work, read with sqlite3."""
    with sqlite3.connect(db) as conn:
        found = conn.execute(
            "SELECT state, run_attempt_count FROM wm_work WHERE id = ?", (str(work_id),)
        ).fetchone()
    assert found is not None, work_id
    return str(found[0]), int(found[1])


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return {str(r[0]) for r in conn.execute("SELECT id FROM wm_work")}


async def stand_by_beside(
    holder: anyio.abc.Process,
    db: Path,
    symlink: Path,
    hard_link: Path,
    work_id: uuid.UUID,
    env: dict[str, str],
) -> None:
    """With ``holder`` running the work ``work_id``: a manager on another path to the
    file stands by (it never recovers the holder's work); one on a hard link is refused."""
    assert holder.stdout is not None
    out = b""
    while not out.endswith(b"\n"):
        out += await holder.stdout.receive()
    assert out.decode().split() == ["running", str(work_id), "0"]
    # The CLI, which takes no lock, reads the file beside the running manager.
    cli_env = {**env, "WM_ASYNC_STORE": f"sqlite:///{symlink}"}
    show = [sys.executable, "-m", "wm_async", "show", str(work_id), "--json"]
    shown = await anyio.run_process(show, env=cli_env)
    assert '"state": "RUNNING"' in shown.stdout.decode()
    ran: list[str] = []
    for path in (symlink, db, hard_link):
        if path == hard_link:
            os.link(db, hard_link)
        manager = wm.WorkManager(f"sqlite:///{path}", shutdown_grace=0)
        manager.register_worker("hold", lambda ctx: ran.append(str(ctx.id)))
        if path == hard_link:
            # SQLite keeps the WAL by name: a file with two names is refused outright.
            with pytest.raises(wm.StoreError) as e:
                async with manager:
                    pass
            assert manager.state is wm.RunState.STOPPED
            assert str(path) in str(e.value)
            assert "2 hard links" in str(e.value)
        else:
            # Another path to the file meets the holder's lock: this one stands by.
            async with manager:
                assert manager.role == "standby"
                info = await manager.get_work_info(work_id)
                assert info is not None
                assert info.state is wm.WorkState.RUNNING
        # Its start-up recovery never ran: the work runs once, in the holder.
        assert row(db, work_id) == ("RUNNING", 1)
    assert ran == []
    os.unlink(hard_link)


async def test_a_second_manager_by_a_symlink_stands_by_and_a_hard_link_is_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "wm.db"
    symlink = tmp_path / "via-symlink.db"
    symlink.symlink_to(db)
    (tmp_path / "elsewhere").mkdir()
    hard_link = tmp_path / "elsewhere" / "via-hard-link.db"
    work_id = uuid.uuid4()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with anyio.fail_after(TIMEOUT):
        holder = await anyio.open_process(
            [sys.executable, "-c", HOLDER, str(db), str(work_id)], env=env
        )
        try:
            await stand_by_beside(holder, db, symlink, hard_link, work_id, env)
        finally:
            holder.kill()
            await holder.aclose()
        ran: list[str] = []
        # The holder is gone, and its lock with it: a manager starts through the symlink
        # and recovers the work it was running.
        manager = wm.WorkManager(f"sqlite:///{symlink}", shutdown_grace=0)
        manager.register_worker("hold", lambda ctx: ran.append(str(ctx.id)))
        async with manager:
            info = await manager.wait(work_id)
        assert info.state is S.SUCCEEDED
        assert ran == [str(work_id)]
    assert row(db, work_id) == ("SUCCEEDED", 2)


async def test_two_stores_of_one_process_on_two_paths_to_a_file_share_the_lock(
    tmp_path: Path,
) -> None:
    from wm_async.stores.sqlite import SQLiteStore

    db = tmp_path / "wm.db"
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with anyio.fail_after(30):
        async with SQLiteStore(db) as first, SQLiteStore(link) as second:
            await first.lock_for_scheduler("first-owner")
            with pytest.raises(wm.StoreError, match="first-owner"):
                await second.lock_for_scheduler("second-owner")
            assert await second.get(["x"]) == []  # the second still reads
        async with SQLiteStore(link) as third:
            await third.lock_for_scheduler("third-owner")  # released when first closed


async def test_a_file_with_two_names_is_refused_untouched(tmp_path: Path) -> None:
    # SQLite keeps the WAL under the name it opened: a manager restarting by another name
    # after a crash would miss the commits left in the first name's WAL.
    db = tmp_path / "wm.db"
    manager = wm.WorkManager(f"sqlite:///{db}", shutdown_grace=0)
    manager.register_worker("w", lambda ctx: None)
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(wm.OneTimeWorkRequest("w", initial_delay=60))
    os.link(db, tmp_path / "other-name.db")
    before = db.read_bytes()
    for path in (db, tmp_path / "other-name.db"):
        again = wm.WorkManager(f"sqlite:///{path}", shutdown_grace=0)
        with pytest.raises(wm.StoreError, match="2 hard links: SQLite keeps a database's WAL"):
            async with again:
                pass
    assert db.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["other-name.db", "wm.db"]


#: Switches argv[1] out of WAL mode, which SQLite refuses while another connection (of
#: any process) has the file open: it holds a SHARED lock on it all along.
SWITCH_JOURNAL = textwrap.dedent(
    """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
    try:
        print(conn.execute("PRAGMA journal_mode = DELETE").fetchone()[0])
    except sqlite3.OperationalError as exc:
        print(exc)
    """
)


async def test_a_second_store_of_the_process_leaves_the_first_ones_locks_alone(
    tmp_path: Path,
) -> None:
    # The OS drops every POSIX lock a process holds on a file when it closes any
    # descriptor of that file, SQLite's included: a second store (a refused manager's)
    # must not open and close a descriptor of its own while the first one runs.
    from wm_async.stores.sqlite import SQLiteStore

    db = tmp_path / "wm.db"
    link = tmp_path / "link.db"
    link.symlink_to(db)
    with anyio.fail_after(TIMEOUT):
        async with SQLiteStore(db) as first:
            await first.lock_for_scheduler("first-owner")
            for path in (db, link):
                second = wm.WorkManager(f"sqlite:///{path}", shutdown_grace=0)
                async with second:
                    assert second.role == "standby"  # the first store holds the lock
            switch = await anyio.run_process([sys.executable, "-c", SWITCH_JOURNAL, str(db)])
            assert switch.stdout.decode().strip() == "database is locked"
            assert await first.get(["x"]) == []
        switch = await anyio.run_process([sys.executable, "-c", SWITCH_JOURNAL, str(db)])
        assert switch.stdout.decode().strip() == "delete"  # the probe can tell


@pytest.mark.parametrize("fault", ["moved away", "deleted", "replaced"])
async def test_writes_fail_once_the_file_is_gone_from_its_path(
    tmp_path: Path, clock: VirtualClock, fault: str
) -> None:
    db = tmp_path / "wm.db"
    moved = tmp_path / "moved.db"
    manager = wm.WorkManager(f"sqlite:///{db}", clock=clock, shutdown_grace=0)
    manager.register_worker("w", lambda ctx: None)
    kept = wm.OneTimeWorkRequest("w", initial_delay=60)
    late = [wm.OneTimeWorkRequest("w", initial_delay=60) for _ in range(2)]
    with anyio.fail_after(30):
        async with manager:
            await manager.enqueue(kept)
            if fault == "moved away":
                db.rename(moved)
            elif fault == "deleted":
                db.unlink()
            else:  # another file (say, a backup restored) takes the path
                moved.write_bytes(b"")
                moved.replace(db)
            for request in late:  # the first write finds it; none is taken later either
                with pytest.raises(wm.StoreGoneError, match="nothing was written"):
                    await manager.enqueue(request)
            # Reading goes on (from the file the store has open).
            info = await manager.get_work_info(kept.id)
            assert info is not None
            assert info.state is S.ENQUEUED
    if fault == "replaced":
        assert db.stat().st_size == 0  # the file now at the path was left alone
    if fault == "moved away":
        moved.replace(db)  # put back (beside its WAL), as the error says
    restarted = wm.WorkManager(f"sqlite:///{db}", clock=clock, shutdown_grace=0)
    restarted.register_worker("w", lambda ctx: None)
    with anyio.fail_after(30):
        async with restarted:
            for request in late:  # never stored, anywhere
                assert await restarted.get_work_info(request.id) is None
            info = await restarted.get_work_info(kept.id)
            if fault == "moved away":
                assert info is not None
                assert info.state is S.ENQUEUED
            else:
                assert info is None


async def test_a_relative_path_keeps_its_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: VirtualClock
) -> None:
    # SQLite resolves the path when it opens the file; so does the check of the path.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    manager = wm.WorkManager("sqlite:///wm.db", clock=clock, shutdown_grace=0)
    manager.register_worker("w", lambda ctx: None)
    request = wm.OneTimeWorkRequest("w", initial_delay=60)
    with anyio.fail_after(30):
        async with manager:
            monkeypatch.chdir(tmp_path / "elsewhere")
            await manager.enqueue(request)
    assert stored_ids(tmp_path / "wm.db") == {str(request.id)}
