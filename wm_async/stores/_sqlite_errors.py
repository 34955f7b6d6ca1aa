"""SQLite's errors: which are worth retrying, and the :class:`StoreError` each becomes."""

from __future__ import annotations

from typing import Final

from .._core.errors import (
    StoreBusyError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
)

#: Retries of a transaction or read that met another process's lock (each after
#: ``busy_timeout`` was already waited out), backing off from _BUSY_BACKOFF, doubling.
BUSY_RETRIES: Final = 3
_BUSY_BACKOFF: Final = 0.05
_HINTS: Final[dict[type[StoreError], str]] = {
    StoreFullError: " (nothing was written; free disk space and retry)",
    StoreReadOnlyError: " (the file, its directory or its mount is read-only)",
    StoreBusyError: " (another process holds the database lock; retry later)",
}


def _code(exc: BaseException) -> int:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else -1


def is_transient(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock; worth retrying."""
    return _code(exc) in (5, 6) or "database is locked" in str(exc)


def error_class(exc: BaseException) -> type[StoreError]:
    """The StoreError subclass for a SQLite error."""
    code = _code(exc)
    text = str(exc)
    if is_corrupt(exc):
        return StoreCorruptError
    if code == 13 or "database or disk is full" in text:  # SQLITE_FULL
        return StoreFullError
    if code == 8 or "readonly database" in text:  # SQLITE_READONLY
        return StoreReadOnlyError
    if is_transient(exc):
        return StoreBusyError
    return StoreError


def is_corrupt(exc: BaseException) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB: the file is damaged or not a database."""
    text = str(exc)
    return _code(exc) in (11, 26) or "not a database" in text or "malformed" in text


def retry_delay(exc: BaseException, attempt: int) -> float | None:
    """How long to wait before retrying what failed with ``exc`` at its ``attempt``-th
    try (from 0), or ``None``: raise it (not transient, or retried enough)."""
    if not is_transient(exc) or attempt >= BUSY_RETRIES:
        return None
    return float(_BUSY_BACKOFF * 2**attempt)


def store_error(exc: BaseException, path: str, doing: str) -> StoreError:
    """The StoreError (of the class :func:`error_class` picks) that callers see for a
    SQLite error met while ``doing`` something with the database at ``path``."""
    cls = error_class(exc)
    return cls(f"SQLite store {path}: {doing} failed: {exc}{_HINTS.get(cls, '')}")
