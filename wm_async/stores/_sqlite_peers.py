"""SQLiteStore's notifications between processes: what one process commits to a SQLite
file, the others following the same file hear of at once, without polling.

- A store that follows the file (:meth:`SQLiteStore.follow`, run by a manager) binds a
  Unix datagram socket with a name in Linux's abstract namespace (no file to create or
  clean up; the OS frees the name when the process dies) and lists it in the table
  ``wm_peers``, with its network namespace: abstract names are per network namespace,
  so a store sends only to the peers of its own.
- After each COMMIT that wrote works, a store (following or not: a CLI's cancel counts)
  sends one datagram, the ids written (``<flags>:<id>,<id>,…``; flag ``*``: anything may
  have changed, ``p``: the peer list changed), to every other peer, without blocking.
  The peer list is cached: re-read at most every :data:`_PEERS_TTL` seconds, on the
  first commit after that, or when a peer joins or leaves (flag ``p``), so a commit
  costs no query; with no other peer, it costs nothing more.
- A peer whose receive queue is full (``EAGAIN``; Linux queues 10 datagrams) is owed
  the note: later ones merge into it (past what a datagram holds: "anything"), and it
  is sent once the queue has room (retried from 2 ms, doubling up to 1 s). A refused
  one (``ECONNREFUSED``): the peer's process is gone; its row is deleted, off the commit
  path.
- The follower reads datagrams as they come (only those of its own user's processes or
  root's: anyone on the host can send to an abstract name), coalesces a burst, tells the
  :class:`StoreListener`: ``wake()`` then ``changed(ids)``. A fallback poll, every
  ``poll_interval``, reads ``PRAGMA data_version`` on the writer connection (it changes
  only when another connection commits): changed with no datagram heard meanwhile (one
  lost, a process killed between its COMMIT and its send, no sockets on this platform),
  it calls ``wake()`` and ``changed(None)``.
- Elsewhere than on Linux there are no sockets: followers rely on the poll alone.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import random
import secrets
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Final

import aiosqlite
import anyio
import attrs

from .._core.errors import StoreError
from ._sqlite_ops import Kind, WriteOp

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from ._base import StoreListener

logger = logging.getLogger("wm_async.store")

#: Whether followers can bind sockets (names in the abstract namespace: Linux only).
SUPPORTED: Final = sys.platform.startswith("linux")
#: The longest list of ids a datagram carries, in characters (a longer one: "anything").
_MAX_TEXT: Final = 8000
#: The most ids one ``changed`` call gets from a burst (more: ``None``).
_MAX_IDS: Final = 1000
#: Seconds a cached peer list is used before the next commit re-reads it.
_PEERS_TTL: Final = 2.0
#: Resending to a peer whose queue was full: after this, doubling up to _RETRY_MAX.
_RETRY_MIN: Final = 0.002
_RETRY_MAX: Final = 1.0
#: Datagrams read in one burst before the listener is told.
_BURST: Final = 256
#: Bound on the work left at close (reading the peer list, deleting dead peers).
_SETTLE_TIMEOUT: Final = 5.0
_FULL: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
_GONE: Final = frozenset({errno.ECONNREFUSED, errno.ENOENT})

SELECT_PEERS: Final = "SELECT address FROM wm_peers WHERE netns = ?"
REGISTER: Final = (
    "INSERT OR REPLACE INTO wm_peers (address, netns, pid, since) VALUES (?, ?, ?, ?)"
)
UNREGISTER: Final = "DELETE FROM wm_peers WHERE address = ?"

#: Statements on ``wm_peers`` with their arguments, run in one transaction.
Statements = list[tuple[str, tuple[object, ...]]]


def network_namespace() -> str:
    """This process's network namespace (``net:[inode]``; ``""`` if it cannot be told)."""
    try:
        return os.readlink("/proc/self/ns/net")
    except OSError:
        return ""


@attrs.frozen
class Note:
    """What a commit wrote: the ids of works (``None``: unknown), and whether the peer
    list changed."""

    ids: frozenset[str] | None
    peers: bool = False

    def merge(self, other: Note | None) -> Note:
        """Both notes in one."""
        if other is None:
            return self
        ids = None if self.ids is None or other.ids is None else self.ids | other.ids
        if ids is not None and len(ids) > _MAX_TEXT // 37:  # more than a datagram holds
            ids = None
        return Note(ids, self.peers or other.peers)

    def encode(self) -> bytes:
        """The datagram: ``<flags>:<ids>``."""
        ids = self.ids
        # Ids are UUIDs: 36 characters and a comma each.
        anything = ids is None or len(ids) * 37 > _MAX_TEXT
        text = "" if ids is None or anything else ",".join(ids)
        flags = ("p" if self.peers else "") + ("*" if anything else "")
        return f"{flags}:{'' if anything else text}".encode()


def decode(data: bytes) -> Note | None:
    """The note a datagram carries (``None``: not one of ours)."""
    try:
        flags, sep, text = data.decode("ascii").partition(":")
    except UnicodeDecodeError:
        return None
    if not sep:
        return None
    ids = None if "*" in flags else frozenset(text.split(",")) if text else frozenset()
    return Note(ids, "p" in flags)


def note_of(ops: Iterable[WriteOp]) -> Note | None:
    """What the committed ``ops`` wrote (``None``: nothing)."""
    ids: set[str] = set()
    anything = peers = False
    for op in ops:
        if op.error is not None:
            continue
        kind, result = op.kind, op.result
        if kind is Kind.INSERT or kind is Kind.APPLY:
            ids.update(r.id for r in result)
        elif kind is Kind.CLAIM:
            ids.update(row[1] for row in result[0])  # rows start (rowid, id, …)
        elif kind is Kind.UNIQUE:
            plan, written = result
            ids.update(r.id for r in written)
            ids.update(plan.deletes)
        elif kind is Kind.UPDATE_SPEC:
            if result is not None:
                ids.add(result.id)
        elif kind is Kind.PEERS:
            peers = True
        elif kind is Kind.PRUNE:
            anything = anything or bool(result)
        elif kind is Kind.PAUSE:  # a worker paused or resumed: the peers re-read
            anything = True
        else:  # QUARANTINE: rows known by rowid
            anything = True
    if anything:
        return Note(None, peers)
    if ids or peers:
        return Note(frozenset(ids), peers)
    return None


async def data_version(writer: aiosqlite.Connection | None) -> int:
    """The writer's ``PRAGMA data_version``: it changes when another connection commits,
    never with the writer's own commits."""
    if writer is None:
        raise StoreError("the SQLite store is closed")
    version: int = next(iter(await writer.execute_fetchall("PRAGMA data_version")))[0]
    return version


async def load_peers(reader: aiosqlite.Connection | None, netns: str) -> list[str]:
    """The addresses ``wm_peers`` lists in the network namespace ``netns``."""
    if reader is None:
        raise StoreError("the SQLite store is closed")
    return [row[0] for row in await reader.execute_fetchall(SELECT_PEERS, (netns,))]


#: Jitter's own generator: the global one is the app's (and its tests' seeds).
_random: Final = random.Random()  # not cryptographic


def _jitter(seconds: float) -> float:
    return seconds * _random.uniform(0.75, 1.25)


def _socket_address(address: str) -> bytes:
    return b"\0" + address.encode()


@attrs.define(eq=False)
class Notifier:
    """One store's side of the notifications (see the module docstring).

    :ivar read_peers: reads the addresses listed in ``wm_peers`` for ``netns``
    :ivar submit: commits statements on ``wm_peers`` through the store's writer
    :ivar sent: datagrams sent so far (for tests)
    """

    read_peers: Callable[[str], Awaitable[list[str]]]
    submit: Callable[[Statements], Awaitable[object]]
    netns: str = attrs.field(factory=network_namespace)
    sent: int = attrs.field(init=False, default=0)
    _own: set[str] = attrs.field(init=False, factory=set)  # our followers' addresses
    _peers: tuple[str, ...] = attrs.field(init=False, default=())
    _loaded: float = attrs.field(init=False, default=-math.inf)  # time.monotonic()
    _pending: Note | None = attrs.field(init=False, default=None)  # while loading
    _loading: asyncio.Task[None] | None = attrs.field(init=False, default=None)
    _sock: socket.socket | None = attrs.field(init=False, default=None)
    # What peers whose queue was full are owed, merged: sent when they have room.
    _owed: dict[str, Note] = attrs.field(init=False, factory=dict)
    _retry: asyncio.TimerHandle | None = attrs.field(init=False, default=None)
    _delay: float = attrs.field(init=False, default=_RETRY_MIN)
    _dead: set[str] = attrs.field(init=False, factory=set)
    _reaping: asyncio.Task[None] | None = attrs.field(init=False, default=None)

    # -- sending ---------------------------------------------------------------------------

    def committed(self, ops: Iterable[WriteOp]) -> None:
        """Tell the peers what ``ops``, just committed, wrote. On the event loop; never
        blocks, never raises."""
        if not SUPPORTED:
            return
        fresh = self._loading is None and time.monotonic() - self._loaded <= _PEERS_TTL
        if fresh and not any(p not in self._own for p in self._peers):
            return  # nobody to tell: the common case costs this much
        note = note_of(ops)
        if note is None:
            return
        if fresh:
            self._send_all(note)
            return
        self._pending = note.merge(self._pending)
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load_and_send())

    async def _load_and_send(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # noqa: BLE001  # the cached list serves meanwhile
            logger.debug("reading the SQLite store's peers failed: %s", exc)
            self._loaded = time.monotonic()
        finally:
            self._loading = None
            note, self._pending = self._pending, None
            if note is not None:
                self._send_all(note)

    async def refresh(self) -> list[str]:
        """Re-read the peer list; return it."""
        peers = await self.read_peers(self.netns)
        self._peers = tuple(peers)
        self._loaded = time.monotonic()
        return peers

    def _send_all(self, note: Note) -> None:
        data = note.encode()
        owed = self._owed
        for address in self._peers:
            if address in self._own or address in self._dead:
                continue
            if address in owed:  # behind: this note waits with the others, merged
                owed[address] = note.merge(owed[address])
            else:
                self._send(address, data, note)

    def _send(self, address: str, data: bytes, note: Note) -> bool:
        sock = self._sock
        try:
            if sock is None:
                sock = self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
            sock.sendto(data, _socket_address(address))
        except OSError as exc:
            if exc.errno in _FULL:  # its queue is full: sent once it has room
                self._owe(address, note)
            elif exc.errno in _GONE:  # nobody listens there: the process is gone
                self._owed.pop(address, None)
                self._bury(address)
            else:
                logger.debug("notifying SQLite peer %s failed: %s", address, exc)
            return False
        self.sent += 1
        return True

    def _owe(self, address: str, note: Note) -> None:
        self._owed[address] = note.merge(self._owed.get(address))
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(self._delay, self._resend)

    def _resend(self) -> None:
        self._retry = None
        owed, self._owed = self._owed, {}
        self._delay = min(self._delay * 2, _RETRY_MAX)  # for a retry _send schedules
        for address, note in owed.items():
            if address in self._peers and address not in self._dead:
                self._send(address, note.encode(), note)
        if not self._owed:
            self._delay = _RETRY_MIN

    def _bury(self, address: str) -> None:
        self._dead.add(address)
        if self._reaping is None:
            self._reaping = asyncio.get_running_loop().create_task(self._reap())

    async def _reap(self) -> None:
        """Delete the rows of dead peers (a transaction of their own, after the commit
        that found them)."""
        try:
            while True:
                dead = self._dead - self._own
                if not dead or not any(p in dead for p in self._peers):
                    return
                try:
                    await self.submit([(UNREGISTER, (address,)) for address in sorted(dead)])
                except Exception as exc:  # noqa: BLE001  # the next sender tries again
                    logger.debug("deleting dead SQLite peers failed: %s", exc)
                    return
                self._peers = tuple(p for p in self._peers if p not in dead)
        finally:
            self._reaping = None

    async def settle(self) -> None:
        """Finish what is left to do (read the peer list and send, unlist dead peers)
        and let go of the socket, as the store closes (its connections still open)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SETTLE_TIMEOUT):
            for task in (self._loading, self._reaping):
                if task is not None:
                    await asyncio.wait([task])
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._owed.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._loaded = -math.inf

    # -- following -------------------------------------------------------------------------

    async def follow(
        self,
        listener: StoreListener,
        *,
        prefix: str,
        poll_interval: float,
        data_version: Callable[[], Awaitable[int]],
        task_status: TaskStatus[None],
    ) -> None:
        """Listen on a socket named ``prefix/<random>`` (listed in ``wm_peers`` meanwhile)
        and tell ``listener`` what the peers wrote; poll ``data_version`` every
        ``poll_interval`` (jittered). Until cancelled."""
        sock: socket.socket | None = None
        address = f"{prefix}/{secrets.token_hex(8)}"
        if SUPPORTED:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                sock.bind(_socket_address(address))
            except OSError as exc:
                sock.close()
                sock = None
                logger.warning("cannot listen for other processes' writes (%s): polling", exc)
        try:
            if sock is not None:
                self._own.add(address)
                await self._register(address)
            version = await data_version()
            task_status.started()
            await self._listen(sock, address, listener, poll_interval, data_version, version)
        finally:
            if sock is not None:
                with anyio.CancelScope(shield=True):
                    sock.close()
                    self._own.discard(address)
                    try:
                        await self.submit([(UNREGISTER, (address,))])
                    except Exception as exc:  # noqa: BLE001  # the next sender deletes it
                        logger.debug("deleting this SQLite peer failed: %s", exc)

    async def _register(self, address: str, *, again: bool = False) -> None:
        try:
            await self.submit([(REGISTER, (address, self.netns, os.getpid(), time.time()))])
        except Exception as exc:  # noqa: BLE001  # the poll serves meanwhile
            logger.log(
                logging.DEBUG if again else logging.WARNING,
                "cannot list this process as a SQLite peer (%s): polling",
                exc,
            )

    async def _listen(
        self,
        sock: socket.socket | None,
        address: str,
        listener: StoreListener,
        poll_interval: float,
        data_version: Callable[[], Awaitable[int]],
        version: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        inbox: list[Note] = []
        arrived = asyncio.Event()

        def on_readable() -> None:
            # Read as datagrams come, even while the listener is busy: the socket's
            # queue is short (Linux: 10 datagrams), and a full one costs an "anything".
            assert sock is not None
            inbox.extend(_drain(sock))
            if len(inbox) > _BURST:  # the listener is far behind: tell it "anything"
                inbox[:] = [Note(None, any(note.peers for note in inbox))]
            if inbox:
                arrived.set()

        if sock is not None:
            loop.add_reader(sock.fileno(), on_readable)
        # Until every writer's cached peer list has this follower, a write may come with
        # no datagram while others' datagrams came: a poll then tells "anything".
        trusted = time.monotonic() + _PEERS_TTL
        heard = False  # a datagram came since the last poll
        next_poll = loop.time() + _jitter(poll_interval)
        try:
            while True:
                with anyio.move_on_after(max(next_poll - loop.time(), 0)):
                    await arrived.wait()
                arrived.clear()
                if inbox:
                    notes = inbox[:]
                    inbox.clear()
                    heard = True
                    await self._deliver(listener, notes)
                if loop.time() < next_poll:
                    continue
                next_poll = loop.time() + _jitter(poll_interval)
                try:
                    now = await data_version()
                except Exception as exc:  # noqa: BLE001  # the next poll tries again
                    logger.debug("polling the SQLite store failed: %s", exc)
                    continue
                if now != version:
                    version = now
                    if sock is not None:
                        await self._check_listed(address)
                    if not heard or time.monotonic() < trusted:
                        listener.wake()  # written, and no datagram told: "anything"
                        await _tell(listener, None)
                heard = False
        finally:
            if sock is not None:
                loop.remove_reader(sock.fileno())

    async def _check_listed(self, address: str) -> None:
        try:
            peers = await self.refresh()
        except Exception as exc:  # noqa: BLE001
            logger.debug("reading the SQLite store's peers failed: %s", exc)
            return
        if address not in peers:  # deleted by mistake: list it again
            await self._register(address, again=True)

    async def _deliver(self, listener: StoreListener, notes: list[Note]) -> None:
        ids: set[str] | None = set()
        for note in notes:
            if ids is not None:
                if note.ids is None or len(ids) + len(note.ids) > _MAX_IDS:
                    ids = None
                else:
                    ids |= note.ids
        if any(note.peers for note in notes):
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001  # the cache expires anyway
                logger.debug("reading the SQLite store's peers failed: %s", exc)
        if ids is not None and not ids:
            return  # only the peer list changed
        if ids is None:  # re-read first (paused workers among it), then claim
            await _tell(listener, None)
            listener.wake()
            return
        listener.wake()
        await _tell(listener, sorted(ids))


def _drain(sock: socket.socket) -> list[Note]:
    """The notes waiting on ``sock`` (up to :data:`_BURST`) sent by a process of this
    user or of root: anyone on the host may send to an abstract name, and others' notes
    are dropped (their writes, if any, reach us through the poll)."""
    notes: list[Note] = []
    for _ in range(_BURST):
        try:
            data, ancillary, _, _ = sock.recvmsg(65536, _CREDENTIALS_SIZE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            logger.debug("reading a SQLite peer's datagram failed: %s", exc)
            break
        note = decode(data) if _trusted(ancillary) else None
        if note is not None:
            notes.append(note)
    return notes


#: ``struct ucred``: pid, uid, gid.
_UCRED: Final = struct.Struct("=iII")
_CREDENTIALS_SIZE: Final = socket.CMSG_SPACE(_UCRED.size) if SUPPORTED else 0


def _trusted(ancillary: list[tuple[int, int, bytes]]) -> bool:
    """Whether the sender (its credentials, which the kernel attaches) is this
    process's user or root."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            _, uid, _ = _UCRED.unpack_from(data)
            return uid in (0, os.geteuid())
    return False


async def _tell(listener: StoreListener, ids: list[str] | None) -> None:
    try:
        await listener.changed(ids)
    except Exception:
        logger.exception("handling other processes' changes failed")
