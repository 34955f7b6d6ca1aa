"""The little of HTTP the dashboard needs, on bare ASGI (no framework): a request read
from an ASGI scope, responses, and errors that become a clear 4xx."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qsl

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]

#: The largest request body accepted (actions and the login form are a few fields).
MAX_BODY: Final = 16 * 1024
#: The longest query string accepted (a list page's live feed names up to 500 ids).
MAX_QUERY: Final = 20_000

#: Sent with every response: no framing, no sniffing, nothing from elsewhere, no cache.
SECURITY_HEADERS: Final = (
    (
        "content-security-policy",
        (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
)


class HTTPError(Exception):
    """A request the dashboard refuses: becomes a response with ``status`` and a
    one-line text saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Request:
    """An HTTP request as the dashboard reads it."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope.get("method", "GET")
        root = scope.get("root_path", "") or ""
        path: str = scope.get("path", "/") or "/"
        # ASGI (and Starlette's Mount) keep the full path and set root_path.
        if root and (path == root or path.startswith(root.rstrip("/") + "/")):
            path = path[len(root.rstrip("/")) :] or "/"
        self.root: str = root.rstrip("/")
        self.path = path
        raw = scope.get("query_string", b"") or b""
        if len(raw) > MAX_QUERY:
            raise HTTPError(414, "query string too long")
        try:
            pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            raise HTTPError(400, "malformed query string") from None
        self.query: dict[str, str] = {}
        for key, value in pairs:
            if key in self.query:
                raise HTTPError(400, f"query parameter {key!r} given twice")
            self.query[key] = value
        self.headers: dict[str, str] = {}
        for name, value in scope.get("headers", ()):
            self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        # name=value pairs separated by ";" (RFC 6265); the dashboard's own values are
        # hex or URL-safe text, so no quoting is undone.
        self.cookies: dict[str, str] = {}
        for part in self.headers.get("cookie", "").split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name and name not in self.cookies:
                self.cookies[name] = value.strip().strip('"')
        client = scope.get("client")
        self.client: str | None = client[0] if client else None

    @property
    def is_loopback(self) -> bool:
        """Whether the client connects from this host (or the server runs in-process)."""
        if self.client is None:
            return True  # an in-process client (a test transport)
        try:
            return ipaddress.ip_address(self.client.split("%")[0]).is_loopback
        except ValueError:
            return False

    async def form(self) -> dict[str, str]:
        """The urlencoded body (at most :data:`MAX_BODY` bytes; a field given twice,
        another content type or a larger body is refused)."""
        kind = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            raise HTTPError(415, "expected a form (application/x-www-form-urlencoded)")
        declared = self.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            raise HTTPError(413, f"request body over {MAX_BODY} bytes")
        body = b""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise HTTPError(400, "client disconnected")
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                raise HTTPError(413, f"request body over {MAX_BODY} bytes")
            if not message.get("more_body"):
                break
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise HTTPError(400, "malformed form") from None
        fields: dict[str, str] = {}
        for key, value in pairs:
            if key in fields:
                raise HTTPError(400, f"form field {key!r} given twice")
            fields[key] = value
        return fields


class Response:
    """A complete response."""

    def __init__(
        self,
        body: str | bytes,
        *,
        status: int = 200,
        content_type: str = "text/html; charset=utf-8",
        headers: Mapping[str, str] | None = None,
        cookies: list[str] | None = None,
    ) -> None:
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.status = status
        self.headers = {"content-type": content_type, **(headers or {})}
        self.cookies = list(cookies or [])

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers to send, security headers included."""
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS]
        out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        out += [(b"set-cookie", c.encode("latin-1")) for c in self.cookies]
        out.append((b"content-length", str(len(self.body)).encode()))
        return out

    async def send(self, send: Send) -> None:
        """Send it through ASGI."""
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers()}
        )
        await send({"type": "http.response.body", "body": self.body})


def text(status: int, message: str) -> Response:
    """A plain-text response (an error's)."""
    return Response(message + "\n", status=status, content_type="text/plain; charset=utf-8")


def redirect(location: str, *, cookies: list[str] | None = None) -> Response:
    """A 303 to ``location`` (a path of the dashboard)."""
    return Response(b"", status=303, headers={"location": location}, cookies=cookies)


def cookie(name: str, value: str, *, path: str, max_age: int | None = None) -> str:
    """A ``Set-Cookie`` value: HttpOnly, SameSite=Strict, limited to ``path``."""
    parts = [f"{name}={value}", f"Path={path or '/'}", "HttpOnly", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    return "; ".join(parts)
