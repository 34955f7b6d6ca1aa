"""Mounting an ASGI app under a path prefix of another (for Quart, and any ASGI app
without a mount of its own)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from .._core.errors import InvalidRequestError
from ._http import Receive, Scope, Send

#: An ASGI application, however a framework spells its type.
_App = TypeVar("_App", bound=Callable[..., Awaitable[None]])


def mount(app: _App, prefix: str, inner: Callable[..., Awaitable[None]]) -> _App:
    """An ASGI app that serves ``prefix`` and the paths below it with ``inner`` (its
    ``root_path`` set to ``prefix``, the path kept whole) and everything else, lifespan included, with
    ``app``: ``quart_app.asgi_app = mount(quart_app.asgi_app, "/wm", dashboard)``.

    :raises InvalidRequestError: if ``prefix`` does not start with ``/`` or ends with one
    """
    given: object = prefix  # checked whatever the annotation says
    if not isinstance(given, str) or not prefix.startswith("/") or prefix.endswith("/"):
        raise InvalidRequestError("prefix", prefix, "expected a path like /wm (no trailing /)")

    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == prefix or path.startswith(prefix + "/")):
            # As Starlette's Mount does: the full path, and the prefix as root_path.
            await inner({**scope, "root_path": prefix}, receive, send)
            return
        await app(scope, receive, send)

    return cast("_App", mounted)  # an ASGI app as ``app`` is (typed as it is)
