"""The database file of :class:`~wm_async.stores.sqlite.SQLiteStore`, held open by the
process: its identity, the one-manager-per-file lock, and whether its path still leads
to it.

- One descriptor per file per process. SQLite locks the database with POSIX advisory
  locks, and the OS drops all of a process's POSIX locks on a file as soon as the
  process closes ANY descriptor of that file. So the stores of a process on one file
  (whatever path each was given) share a descriptor, opened before their connections
  and closed after the last of them closed, never in between.
- The scheduler lock is a lock on one byte of the database file that SQLite never locks
  (its own take 512 bytes from 1 GiB, :data:`_LOCK_BYTE` is far from them): it belongs
  to the file itself, so a symlink or a hard link to the file meets it too, and no other
  file is created for it. On Linux it is an open file description lock, which no close
  of another descriptor drops and which two descriptors of one process contend for;
  elsewhere a POSIX record lock (the process's, so the stores of a process are kept
  apart by :attr:`DBFile.scheduler`). Not ``flock``: on the BSDs and macOS it would
  contend with SQLite's own locks. Either way the OS drops it when the process dies.
- One name per file. SQLite keeps the WAL under the path it opened (symlinks resolved),
  so a file opened by two names (hard links, bind mounts) has two WALs: what one
  committed the other does not see and overwrites, and a restart by the other name after
  a crash misses the commits left in the first one's WAL. A store refuses a file with
  several hard links (a bind mount it cannot tell).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading
from typing import Final

import attrs

from .._core.errors import (
    StoreCorruptError,
    StoreError,
)
from ._sqlite_sql import HEADER

__all__ = ["DBFile", "acquire", "describe", "identity_at"]

#: The byte locked: past SQLite's lock bytes (0x40000000 to 0x400001FF) and its lock page
#: (at most 64 KiB), below 2 GiB (a 32-bit ``off_t``). It need not lie inside the file.
_LOCK_BYTE: Final = 0x6000_0000
_OFD_SETLK: Final[int | None] = getattr(fcntl, "F_OFD_SETLK", None)  # Linux 3.15+
_TWO_NAMES: Final = (
    "SQLite keeps a database's WAL under the name it was opened by, so opening it by two "
    "names (at once, or one after a crash) loses or corrupts what was committed; wm_async "
    "left it untouched. Keep one name (copy the file rather than link it)"
)

#: (st_dev, st_ino) of a file
Identity = tuple[int, int]


@attrs.define(eq=False)
class DBFile:
    """A database file this process holds open (see the module docstring)."""

    fd: int
    identity: Identity
    writable: bool  # opened O_RDWR (else O_RDONLY: a read-only file takes a shared lock)
    users: int = 1  # stores holding it
    scheduler: str | None = None  # the owner holding the scheduler lock in this process
    # Descriptors of the file opened after ``fd`` (only if its path changed meanwhile):
    # closed with it, never before.
    spare: list[int] = attrs.field(factory=list)

    def lock_scheduler(self, owner: str) -> str | None:
        """Take the scheduler lock for ``owner``; return who holds it if that is not us.

        :raises StoreError: if the OS cannot lock the file
        """
        with _guard:
            if self.scheduler is not None:
                return f"{self.scheduler} (in this process)"
            try:
                _set_lock(self.fd, fcntl.F_WRLCK if self.writable else fcntl.F_RDLCK)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return "another process"
                raise StoreError(f"cannot lock the SQLite file: {exc}") from exc
            self.scheduler = owner
            return None

    def unlock_scheduler(self) -> None:
        """Release the scheduler lock, if this process holds it."""
        with _guard:
            if self.scheduler is not None:
                self.scheduler = None
                try:
                    _set_lock(self.fd, fcntl.F_UNLCK)
                except OSError:
                    pass  # cannot happen to a lock held; released with the descriptor anyway

    def release(self) -> None:
        """One store less; close the descriptors after the last one (whose connections
        must be closed by then)."""
        with _guard:
            self.users -= 1
            if self.users:
                return
            if _files.get(self.identity) is self:
                del _files[self.identity]
            for fd in (*self.spare, self.fd):
                os.close(fd)  # also drops the scheduler lock


_files: dict[Identity, DBFile] = {}
_guard = threading.Lock()  # stores may open and close in several threads (event loops)


def acquire(path: str) -> DBFile:
    """The file at ``path``, shared with the stores of this process already holding it,
    else opened (created private, 0600, if missing) and checked to be a SQLite file.

    Blocking: call it in a worker thread.

    :raises StoreCorruptError: if the file is not empty and not a SQLite database
    :raises StoreError: if the file cannot be opened or has several hard links
    """
    opened = _acquire(path)
    try:
        links = os.fstat(opened.fd).st_nlink
    except OSError as exc:
        opened.release()
        raise StoreError(f"cannot read the SQLite store {path}: {exc}") from exc
    if links > 1:
        opened.release()
        raise StoreError(f"{path} is a file with {links} hard links: {_TWO_NAMES}")
    return opened


def _acquire(path: str) -> DBFile:
    with _guard:
        try:
            now = identity_at(path)
            known = None if now is None else _files.get(now)
            if known is not None:  # open here already: open no second descriptor
                known.users += 1
                return known
            fd, writable = _open(path)
        except OSError as exc:
            raise StoreError(f"cannot open the SQLite store {path}: {exc}") from exc
        try:
            stat = os.fstat(fd)
            key = (stat.st_dev, stat.st_ino)
            known = _files.get(key)
            if known is not None:  # the path changed to a file open here between two calls
                known.spare.append(fd)
                known.users += 1
                return known
            head = os.pread(fd, len(HEADER), 0)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot read the SQLite store {path}: {exc}") from exc
        if head and head != HEADER:
            os.close(fd)
            raise StoreCorruptError(f"{path} is not a SQLite database; wm_async left it untouched")
        opened = _files[key] = DBFile(fd, key, writable)
        return opened


def describe(path: str, fd: int) -> str:
    """``path``, and what else leads to the file (its descriptor ``fd``), for messages."""
    where = path
    real = os.path.realpath(path)
    if real != os.path.abspath(path):
        where += f" (the file {real})"
    links = os.fstat(fd).st_nlink
    if links > 1:
        where += f" (one of the {links} hard links to the file)"
    return where


def identity_at(path: str) -> Identity | None:
    """The identity of the file ``path`` leads to now; ``None`` if none does.

    :raises OSError: if it cannot be told (a directory on the way not searchable)
    """
    try:
        stat = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return stat.st_dev, stat.st_ino


def _open(path: str) -> tuple[int, bool]:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), True
    except FileExistsError:
        pass
    try:
        return os.open(path, os.O_RDWR), True
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    # Read-only (its mode, an immutable flag, the mount): SQLite opens it so too, and
    # reports the first write.
    return os.open(path, os.O_RDONLY), False


def _set_lock(fd: int, kind: int) -> None:
    """Set (F_WRLCK, F_RDLCK) or clear (F_UNLCK) the lock on :data:`_LOCK_BYTE`, without
    waiting."""
    if _OFD_SETLK is not None:
        try:
            fcntl.fcntl(fd, _OFD_SETLK, _flock(kind))
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: a kernel without them
                raise
    operation = {fcntl.F_WRLCK: fcntl.LOCK_EX, fcntl.F_RDLCK: fcntl.LOCK_SH}.get(kind)
    if operation is None:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _LOCK_BYTE)
    else:
        fcntl.lockf(fd, operation | fcntl.LOCK_NB, 1, _LOCK_BYTE)


def _flock(kind: int) -> bytes:
    """A ``struct flock`` for :data:`_LOCK_BYTE`, as Linux lays it out (64-bit ``off_t``):
    ``short l_type, l_whence; off_t l_start, l_len; pid_t l_pid`` (0 for an open file
    description lock)."""
    return struct.pack("@hhqqi", kind, os.SEEK_SET, _LOCK_BYTE, 1, 0)
