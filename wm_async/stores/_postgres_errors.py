"""PostgreSQL's driver errors: which are worth retrying, the retries, and the
:class:`StoreError` each becomes (never showing a password)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from itertools import count
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import asyncpg

from .._core.errors import (
    InvalidRequestError,
    StoreError,
)
from .._core.redact import mask_text

if TYPE_CHECKING:
    from ._postgres_ops import Write

logger = logging.getLogger("wm_async.stores.postgres")

_T = TypeVar("_T")
#: Retries back off from this delay, doubling, up to _BACKOFF_MAX.
_BACKOFF_MIN: Final = 0.05
_BACKOFF_MAX: Final = 1.0

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


async def retrying(
    pool: Callable[[], Any],
    doing: str,
    fn: Callable[[Any], Awaitable[_T]],
    *,
    transaction: bool,
    retry_timeout: float,
    dsn: str,
    schema: str,
    write: Write | None,
) -> _T:
    """Run ``fn`` on a connection of ``pool()`` (in a transaction), retrying transient
    errors for up to ``retry_timeout`` seconds; driver errors become StoreError
    (:func:`store_error`), StoreError and InvalidRequestError pass.

    A transient error may have struck after the COMMIT (or an autocommitted statement)
    took effect, its answer lost: ``write.uncertain`` then tells ``fn``'s next attempts
    to recognise what an earlier one may have written (by ``write.token``) before they
    write again."""
    slept = 0.0
    for attempt in count():
        use = pool()
        done = False
        try:
            async with use.acquire() as conn:
                if transaction:
                    async with conn.transaction():
                        result = await fn(conn)
                else:
                    result = await fn(conn)
                done = True
        except (StoreError, InvalidRequestError):
            raise
        except Exception as exc:
            if done:
                # The pool resets a connection it gets back, and that failed (its
                # backend was just terminated, say): the operation itself has
                # completed, so its result stands. Running it again would repeat it
                # (a second claim, leaving the first one's works unstarted).
                logger.debug("%s: releasing the connection failed: %r", doing, exc)
                return result
            if not is_transient(exc) or slept >= retry_timeout:
                raise store_error(exc, dsn=dsn, schema=schema, doing=doing) from exc
            if write is not None:
                write.uncertain = True
            if attempt == 0:
                logger.warning("%s: %s; retrying", doing, mask_text(repr(exc), secrets_of=dsn))
        else:
            return result
        delay = min(_BACKOFF_MIN * 2**attempt, _BACKOFF_MAX)
        await anyio.sleep(delay)
        slept += delay
    raise AssertionError("unreachable")
