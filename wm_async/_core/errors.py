"""The exceptions wm_async raises.

Every error derives from :class:`WorkManagerError`, and most also derive from the builtin
that best describes them, so ``except ValueError`` keeps working in code that does not
know wm_async::

    WorkManagerError(Exception)
    ├── InvalidRequestError(ValueError)      bad argument, raised by the call that got it
    │   └── DataTooLargeError                 input/output/progress over max_data_bytes
    ├── UnknownWorkerError(LookupError)       no worker registered under that name
    ├── StoreError                            the store failed (I/O, connection, locking)
    │   ├── StoreCorruptError                 the file is not a wm_async store, or is damaged
    │   │                                     or written by a newer version
    │   └── StoreGoneError                    the file was deleted, moved or replaced in use
    ├── NotRunningError(RuntimeError)         the manager is not started (or is stopping)
    │   └── SchedulerError                    it stopped on an unexpected internal error
    └── BlockingCallError(RuntimeError)       a SyncClient call made in an event loop's thread
"""

from __future__ import annotations

from .redact import (
    mask_text,
    mask_url,
)


class WorkManagerError(Exception):
    """Base class of every error raised by wm_async."""


class InvalidRequestError(WorkManagerError, ValueError):
    """A request, argument or payload is invalid.

    Raised by the call that received it (construction or enqueue), never later at run
    time. Nothing already stored is changed.

    :ivar field: the name of the offending field or argument
    :ivar value: the offending value
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field}={_shown(value)}: {reason}")


def _shown(value: object) -> str:
    """``repr(value)`` with any credential masked (a store URL's password), cut to 200
    characters; never raises (the value is bad input: an int too long to print, an
    object whose ``__repr__`` fails)."""
    try:
        shown = repr(mask_url(value)) if isinstance(value, str) else mask_text(repr(value))
    except Exception as exc:  # noqa: BLE001  # any failure: describe the value instead
        return f"<{type(value).__name__} object; repr() failed: {type(exc).__name__}>"
    if len(shown) > 200:
        shown = shown[:197] + "..."
    return shown


class DataTooLargeError(InvalidRequestError):
    """Input, output or progress data serialises to more than ``max_data_bytes``.

    :ivar size: the serialised size in bytes
    :ivar limit: the configured limit in bytes
    """

    def __init__(self, field: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            field,
            f"<{size} bytes of JSON>",
            f"serialised size {size} bytes exceeds max_data_bytes={limit}; store large "
            "payloads elsewhere and pass a reference",
        )


class UnknownWorkerError(WorkManagerError, LookupError):
    """No worker is registered under the given name.

    :ivar name: the worker name that was looked up
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"no worker registered as {name!r}; register one with @manager.worker({name!r})"
        )


class StoreError(WorkManagerError):
    """The store could not complete an operation (I/O error, lost connection, lock).

    Driver exceptions are chained as ``__cause__``.
    """


class StoreCorruptError(StoreError):
    """The store's file or schema is not one this version of wm_async can use.

    Raised for a file that is not a wm_async database, a damaged file, or a schema written
    by a newer version. The file is left untouched.
    """


class StoreFullError(StoreError):
    """The store has no room: the disk (or a quota, or SQLite's ``max_page_count``) is
    full. The operation that hit it changed nothing; free space and retry."""


class StoreReadOnlyError(StoreError):
    """The store can be read but not written (a read-only file, directory or mount)."""


class StoreBusyError(StoreError):
    """Another process held the store's lock for longer than the store waits and retries
    (SQLite: ``busy_timeout`` several times over). Transient: retry later."""


class StoreGoneError(StoreError):
    """The store's file was deleted, moved away or replaced while the store had it open
    (SQLite): the path no longer leads to the file the store writes to, so whatever it
    wrote there would be lost to the next start. The write that found it wrote nothing,
    and the store takes no more writes (reads go on); put the file back and restart."""


class NotRunningError(WorkManagerError, RuntimeError):
    """The manager is not running, so the call cannot be served.

    :ivar state: the manager's run state when the call was made
    """

    def __init__(self, operation: str, state: str) -> None:
        self.operation = operation
        self.state = state
        super().__init__(
            f"cannot {operation}: the WorkManager is {state}; use it inside 'async with manager:'"
        )


class SchedulerError(NotRunningError):
    """The manager's scheduler (or another of its services) stopped on an unexpected
    error, so no work runs any more.

    Every call made after it raises this, and so does leaving ``async with manager:``;
    the manager can be started again. The error is logged at ERROR when it happens and
    chained as ``__cause__``.

    :ivar cause: the unexpected error
    """

    def __init__(self, operation: str, cause: BaseException) -> None:
        self.operation = operation
        self.state = "failed"
        self.cause = cause
        WorkManagerError.__init__(
            self,
            f"cannot {operation}: the WorkManager's scheduler stopped on "
            f"{type(cause).__name__}: {cause}; no work runs until the manager is started "
            "again (see the ERROR logged by wm_async)",
        )


class BlockingCallError(WorkManagerError, RuntimeError):
    """A blocking :class:`~wm_async.SyncClient` call was made in a thread that runs an
    event loop (an ``async def``, or the client's own loop thread), where blocking would
    stall that loop or deadlock. Nothing was done: use the async API there
    (``await manager.enqueue(...)`` on a :class:`~wm_async.WorkManager`).

    :ivar operation: the call that was refused
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(
            f"cannot {operation} through a SyncClient in a thread running an event loop: "
            "it would block the loop; use the async API there (await "
            f"manager.{operation}(...) on a WorkManager)"
        )
