"""PostgreSQL's driver errors: which are worth retrying, and the :class:`StoreError` each
becomes (never showing a password)."""

from __future__ import annotations

from typing import Final

import asyncpg

from .._core.errors import StoreError
from .._core.redact import mask_text

#: SQLSTATE classes and codes worth retrying: connection exceptions (08), serialization
#: failure and deadlock (40001, 40P01), too many connections (53300), and the server
#: shutting down or starting up (57P01-57P03: admin/crash shutdown, cannot connect now).
_TRANSIENT_STATES: Final = frozenset({"40001", "40P01", "53300", "57P01", "57P02", "57P03"})


def is_transient(exc: BaseException) -> bool:
    """True for errors that a retry on a fresh connection may not meet again."""
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        # InterfaceError: the connection was closed under us (terminated backend) or is
        # in an unusable state; the pool replaces it.
        return True
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        # "cannot switch to state …; another operation is in progress": the pool handed
        # out a connection whose backend was just terminated (the server's FATAL arrived
        # while it was idle); nothing was sent on it.
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith("08") or state in _TRANSIENT_STATES
    return False


def store_error(exc: BaseException, *, dsn: str, schema: str, doing: str) -> StoreError:
    """The StoreError callers see for a driver error met while ``doing`` something (a
    driver's message may quote the DSN or a part of it: never show a secret)."""
    message = mask_text(repr(exc), secrets_of=dsn)
    return StoreError(f"PostgreSQL store (schema {schema}): {doing} failed: {message}")
