"""Processes on one SQLite file hear of one another's commits: real processes
(``_peer_child.py``) follow the file while this one writes to it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from wm_async._core.errors import InvalidRequestError
from wm_async._core.lifecycle import cancel
from wm_async.stores import _sqlite_peers as peers
from wm_async.stores.sqlite import SQLiteStore
from wm_async.testing.conformance._helpers import NOW, record

CHILD = Path(__file__).with_name("_peer_child.py")
DEADLINE = 30.0  # seconds: generous, for loaded machines

needs_sockets = pytest.mark.skipif(
    not peers.SUPPORTED, reason="notifications by socket need Linux (elsewhere: the poll)"
)


class Child:
    """A ``_peer_child.py`` process and the lines it printed."""

    def __init__(self, path: Path, *, poll_interval: float, sockets: bool = True) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(CHILD),
                str(path),
                str(poll_interval),
                *([] if sockets else ["nosockets"]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = self.wait_for(lambda: any(line.startswith("ready ") for line in self.lines))
        self.address = ready.partition(" ")[2]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, found: Callable[[], bool]) -> str:
        """Wait until ``found()``; return the last line printed."""
        deadline = time.monotonic() + DEADLINE
        while not found():
            assert self.proc.poll() is None or self._reader.is_alive(), self.lines
            assert time.monotonic() < deadline, f"not heard in time: {self.lines}"
            time.sleep(0.01)
        return self.lines[-1]

    def changed(self) -> list[str]:
        """The ``changed`` lines' payloads (``*`` for anything)."""
        return [line.partition(" ")[2] for line in self.lines if line.startswith("changed ")]

    def heard(self, work_id: str) -> bool:
        return any(work_id in payload.split(",") for payload in self.changed())

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        if self.proc.returncode is None:
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=DEADLINE)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "wm.db"


@pytest.fixture
def children() -> Iterator[Callable[..., Child]]:
    started: list[Child] = []

    def start(path: Path, *, poll_interval: float = 3600, sockets: bool = True) -> Child:
        child = Child(path, poll_interval=poll_interval, sockets=sockets)
        started.append(child)
        return child

    yield start
    for child in started:
        if child.proc.poll() is None:
            child.proc.kill()
        child.stop()


def _peer_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT address FROM wm_peers")]


async def _until(found: Callable[[], bool]) -> None:
    with anyio.fail_after(DEADLINE):
        while not found():  # noqa: ASYNC110  # another process: no event to await
            await anyio.sleep(0.01)


@needs_sockets
async def test_another_process_hears_the_ids_written_at_once(
    db_path: Path, children: Callable[..., Child]
) -> None:
    # The child's poll never comes (an hour): only a datagram can tell it.
    child = children(db_path, poll_interval=3600)
    assert _peer_rows(db_path) == [child.address]
    work = record()
    async with SQLiteStore(db_path) as store:  # a plain store, not following: it tells
        await store.insert([work])
        await _until(lambda: child.heard(work.id))
        assert "wake" in child.lines  # due work may have appeared

        heard_before = len(child.changed())
        change = cancel(work, now=NOW + 1)
        assert change is not None
        await store.apply([change])
        await _until(lambda: len(child.changed()) > heard_before)
        assert child.changed()[heard_before:] == [work.id]
    assert "changed *" not in child.lines  # the socket told everything: no poll fired


@needs_sockets
async def test_a_large_write_is_told_as_anything(
    db_path: Path, children: Callable[..., Child]
) -> None:
    # More ids than a datagram carries: the follower is told "anything may have changed"
    # (its manager re-reads what it waits on and watches), still without polling.
    child = children(db_path, poll_interval=3600)
    async with SQLiteStore(db_path) as store:
        await store.insert([record() for _ in range(1000)])
        await _until(lambda: "*" in child.changed())


@needs_sockets
async def test_a_cli_cancel_reaches_a_following_process(
    db_path: Path, tmp_path: Path, children: Callable[..., Child]
) -> None:
    work = record()
    async with SQLiteStore(db_path) as store:
        await store.insert([work])
    child = children(db_path, poll_interval=3600)
    proc = await anyio.run_process(
        [sys.executable, "-m", "wm_async", "cancel", work.id],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "WM_ASYNC_STORE": f"sqlite:///{db_path}",
        },
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    await _until(lambda: child.heard(work.id))


@needs_sockets
async def test_a_symlinked_path_meets_the_same_peers(
    db_path: Path, tmp_path: Path, children: Callable[..., Child]
) -> None:
    async with SQLiteStore(db_path):
        pass  # create the file
    link = tmp_path / "link.db"
    link.symlink_to(db_path)
    child = children(link, poll_interval=3600)
    work = record()
    async with SQLiteStore(db_path) as store:
        await store.insert([work])
        await _until(lambda: child.heard(work.id))


async def test_the_poll_tells_of_writes_no_datagram_announced(
    db_path: Path, children: Callable[..., Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    child = children(db_path, poll_interval=0.2)
    monkeypatch.setattr(peers.Notifier, "committed", lambda self, ops: None)  # lost
    async with SQLiteStore(db_path) as store:
        await store.insert([record()])
        await _until(lambda: "*" in child.changed())
    assert "wake" in child.lines


async def test_without_sockets_a_follower_polls(
    db_path: Path, children: Callable[..., Child]
) -> None:
    # As elsewhere than on Linux: no socket, no row; the poll tells "anything".
    child = children(db_path, poll_interval=0.2, sockets=False)
    assert child.address == ""
    assert _peer_rows(db_path) == []
    async with SQLiteStore(db_path) as store:
        await store.insert([record()])
        await _until(lambda: "*" in child.changed())
    assert "wake" in child.lines


async def test_the_poll_is_quiet_while_nothing_is_written(
    db_path: Path, children: Callable[..., Child]
) -> None:
    child = children(db_path, poll_interval=0.05)
    work = record()
    async with SQLiteStore(db_path) as store:
        await store.insert([work])
        await _until(lambda: bool(child.changed()))
    # Let it poll many times more: the writer's own commits never count, and nothing
    # else is written now, so no "anything" comes (at most one for the write above, if
    # the poll ran between its COMMIT and its datagram).
    await anyio.sleep(1.0)  # about 20 polls; a slow machine makes fewer, never more
    assert child.changed().count("*") <= 1, child.lines


@needs_sockets
async def test_a_killed_peer_is_unlisted_by_the_next_writer(
    db_path: Path, children: Callable[..., Child]
) -> None:
    dead = children(db_path)
    alive = children(db_path)
    assert sorted(_peer_rows(db_path)) == sorted([dead.address, alive.address])
    dead.proc.send_signal(signal.SIGKILL)
    dead.proc.wait(timeout=DEADLINE)

    work = record()
    async with SQLiteStore(db_path) as store:  # a short-lived writer, as a CLI is
        await store.insert([work])
    assert _peer_rows(db_path) == [alive.address]  # unlisted before close returned
    await _until(lambda: alive.heard(work.id))  # the living still hear


@needs_sockets
async def test_a_peer_that_stops_unlists_itself(
    db_path: Path, children: Callable[..., Child]
) -> None:
    child = children(db_path)
    assert _peer_rows(db_path) == [child.address]
    child.stop()
    assert child.lines[-1] == "closed"
    assert _peer_rows(db_path) == []


@needs_sockets
async def test_a_peer_that_reads_late_still_hears_of_every_write(db_path: Path) -> None:
    # A socket of this test, listed as a peer, read only after many commits: its queue
    # (a few datagrams) overflows, and the writer sends the rest, merged, once it drains.
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = f"wm_async/test/{os.getpid()}"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # as a follower does
    sock.bind(b"\0" + address.encode())
    sock.setblocking(False)
    try:
        async with SQLiteStore(db_path) as store:
            with sqlite3.connect(db_path) as conn:
                conn.execute(
                    "INSERT INTO wm_peers (address, netns, pid, since) VALUES (?, ?, ?, ?)",
                    (address, peers.network_namespace(), os.getpid(), time.time()),
                )
            written = set()
            for _ in range(150):
                work = record()
                await store.insert([work])
                written.add(work.id)
            told: set[str] = set()

            def drained() -> bool:
                for note in peers._drain(sock):
                    assert note.ids is not None  # 150 ids fit: none is lost to "anything"
                    told.update(note.ids)
                return told >= written

            await _until(drained)
    finally:
        sock.close()


@needs_sockets
@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="sending as another user needs root"
)
async def test_datagrams_of_another_user_are_ignored(
    db_path: Path, children: Callable[..., Child]
) -> None:
    # Anyone on the host may send to an abstract name: a process of another user could
    # otherwise make a manager re-read everything, again and again.
    child = children(db_path, poll_interval=3600)
    send = (
        "import os, socket, sys; os.setuid(int(sys.argv[3])); "
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
        "s.sendto(sys.argv[2].encode(), b'\\0' + sys.argv[1].encode())"
    )
    for payload, user in ((":from-nobody", 65534), (":from-root", 0)):
        await anyio.run_process(
            [sys.executable, "-c", send, child.address, payload, str(user)], check=True
        )
    await _until(lambda: child.heard("from-root"))
    assert not child.heard("from-nobody")


async def test_a_store_alone_sends_nothing(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        works = [record() for _ in range(20)]
        for work in works:
            await store.insert([work])
        for work in works:
            change = cancel(work, now=NOW + 1)
            assert change is not None
            await store.apply([change])
        assert store._notifier.sent == 0


async def test_a_following_store_alone_sends_nothing(db_path: Path) -> None:
    async with SQLiteStore(db_path) as store:
        heard: list[object] = []

        async def changed(ids: object) -> None:
            heard.append(ids)

        from wm_async.stores._base import StoreListener

        listener = StoreListener(
            now=lambda: NOW, real_time=True, wake=lambda: None, changed=changed
        )
        async with anyio.create_task_group() as tg:
            await tg.start(store.follow, listener)
            for _ in range(20):
                await store.insert([record()])
            tg.cancel_scope.cancel()
        assert store._notifier.sent == 0
        assert heard == []  # its own writes are not news to it
    assert _peer_rows(db_path) == []


@pytest.mark.parametrize("value", [0, -1, True, "1", 1e6, float("nan")])
def test_poll_interval_is_checked(db_path: Path, value: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        SQLiteStore(db_path, poll_interval=value)  # type: ignore[arg-type]
    assert caught.value.field == "poll_interval"
