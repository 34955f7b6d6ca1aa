"""Stores: where works are persisted.

``open_store(url)`` picks a backend by URL scheme; backends are imported only when used,
so an app on SQLite never imports asyncpg.
"""

from __future__ import annotations

import typing

from ._base import Claimed as Claimed
from ._base import ClaimParams as ClaimParams
from ._base import JoinedTransaction as JoinedTransaction
from ._base import Store as Store
from ._base import StoreListener as StoreListener

__all__ = (
    "ClaimParams",
    "Claimed",
    "JoinedTransaction",
    "Store",
    "StoreListener",
    "open_store",
)

if typing.TYPE_CHECKING:
    from .memory import MemoryStore as MemoryStore
    from .postgres import PostgresStore as PostgresStore
    from .sqlite import SQLiteStore as SQLiteStore


def __getattr__(name: str) -> object:
    """The backends, importable from here too, each imported on first use
    (PostgresStore needs asyncpg, the ``postgres`` extra). No name is imported by a
    string: each backend is one fixed import."""
    if name == "MemoryStore":
        from .memory import MemoryStore

        return MemoryStore
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_store(url: str) -> Store:
    """Create (not yet open) the store a URL names.

    - ``memory://``: :class:`~wm_async.stores.memory.MemoryStore`
    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``:
      :class:`~wm_async.stores.sqlite.SQLiteStore`
    - ``postgresql://…`` / ``postgres://…``: PostgresStore (needs the ``postgres`` extra)

    :raises InvalidRequestError: for a URL no backend handles
    :raises StoreError: if the backend's driver is not installed
    """
    from .._core.errors import (
        InvalidRequestError,
        StoreError,
    )
    from .._core.redact import mask_url

    if not isinstance(url, str):
        raise InvalidRequestError("store", url, "expected a store URL or a Store instance")
    shown = mask_url(url)  # what errors show: never a password
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidRequestError("store", shown, "expected a URL such as sqlite:///wm_async.db")
    scheme = scheme.lower()
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        path = rest.removeprefix("/")
        if not path:
            raise InvalidRequestError("store", shown, "sqlite URLs need a path: sqlite:///file.db")
        return SQLiteStore(path)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs asyncpg: pip install 'wm_async[postgres]' ({exc})"
            ) from exc
        return PostgresStore(url)  # type: ignore[no-any-return, unused-ignore]
    raise InvalidRequestError(
        "store", shown, "unknown scheme; use memory://, sqlite:///path or postgresql://"
    )
