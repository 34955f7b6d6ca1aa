"""Serving the dashboard from an aiohttp application, under a prefix::

    from wm_async.dashboard import Dashboard
    from wm_async.dashboard.aiohttp import setup as setup_dashboard

    setup_dashboard(app, Dashboard(manager, token=...), prefix="/wm")

Each request is handed to the dashboard's ASGI application (no other dependency);
server-sent events stream through aiohttp's ``StreamResponse``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - the test extra installs aiohttp
    raise ImportError(
        f"wm_async.dashboard.aiohttp needs aiohttp: pip install 'wm_async[aiohttp]' ({exc})"
    ) from exc

import anyio

from .._core.errors import InvalidRequestError
from ._app import Dashboard
from ._http import MAX_BODY

__all__ = ("handler", "setup")


def handler(dashboard: Dashboard, prefix: str) -> Any:
    """An aiohttp handler serving ``dashboard`` mounted at ``prefix``."""

    async def serve(request: web.Request) -> web.StreamResponse:
        body = await request.content.read(MAX_BODY + 1)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.scheme,
            "path": request.path,
            "raw_path": request.raw_path.encode(),
            "root_path": prefix,
            "query_string": request.query_string.encode(),
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "client": (peer[0], peer[1]) if isinstance(peer, tuple) else None,
            "server": None,
        }
        response: web.StreamResponse | None = None
        sent_body = False
        disconnected = anyio.Event()

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal response
            if message["type"] == "http.response.start":
                response = web.StreamResponse(status=message["status"])
                for name, value in message.get("headers", []):
                    key = name.decode("latin-1")
                    if key.lower() == "content-length":
                        continue
                    response.headers.add(key, value.decode("latin-1"))
                await response.prepare(request)
            elif message["type"] == "http.response.body":
                assert response is not None
                try:
                    await response.write(message.get("body", b""))
                except (ConnectionResetError, RuntimeError):
                    disconnected.set()
                    raise
                if not message.get("more_body"):
                    await response.write_eof()

        try:
            await dashboard(scope, receive, send)
        finally:
            disconnected.set()
        assert response is not None
        return response

    return serve


def setup(app: web.Application, dashboard: Dashboard, *, prefix: str = "/wm") -> None:
    """Serve ``dashboard`` under ``prefix`` (``/wm`` and every path below it).

    :raises InvalidRequestError: for a prefix that does not start with ``/`` or ends
        with one, or an object that is not a Dashboard
    """
    if not isinstance(dashboard, Dashboard):
        raise InvalidRequestError("dashboard", dashboard, "expected a Dashboard")
    given: object = prefix  # checked whatever the annotation says
    if not isinstance(given, str) or not prefix.startswith("/") or prefix.endswith("/"):
        raise InvalidRequestError("prefix", prefix, "expected a path like /wm (no trailing /)")
    serve = handler(dashboard, prefix)
    app.router.add_route("*", prefix, serve)
    app.router.add_route("*", prefix + "/{tail:.*}", serve)
