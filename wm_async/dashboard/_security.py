"""Who may see the dashboard and act through it: a token (or the host app's own check),
CSRF tokens bound to a cookie, the loopback rule, and redaction of what works hold."""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeAlias
from urllib.parse import urlsplit

from .._core.data import JSONValue
from .._core.model import WorkInfo
from .._core.redact import MASK, is_secret_name, mask_text
from ._http import HTTPError, Request

#: The host app's check: given the request, whether its user may use the dashboard
#: (sync or async). It sees the method, the path, the headers and the cookies.
Authorize: TypeAlias = Callable[[Request], bool | Awaitable[bool]]
#: The app's redaction: ``(work, field, data) -> data to show``, for ``field`` in
#: ``"input"``, ``"output"`` and ``"progress"``.
Redact: TypeAlias = Callable[[WorkInfo, str, Mapping[str, JSONValue]], Mapping[str, JSONValue]]

SESSION_COOKIE: Final = "wm_dash_session"
CSRF_COOKIE: Final = "wm_dash_csrf"


def default_redact(
    info: WorkInfo, field: str, data: Mapping[str, JSONValue]
) -> Mapping[str, JSONValue]:
    """Mask the values whose key names a secret (``password``, ``token``, ``api_key``,
    … : the markers of ``wm_async``'s URL masking), at any depth, and credentials in
    URLs inside strings."""
    return {k: _masked(k, v) for k, v in data.items()}


def _masked(key: str, value: JSONValue) -> JSONValue:
    if is_secret_name(key):
        return MASK
    if isinstance(value, dict):
        return {k: _masked(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked("", v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


class Guard:
    """The dashboard's access rules (see :class:`~wm_async.dashboard.Dashboard`)."""

    def __init__(
        self,
        *,
        token: str | None,
        authorize: Authorize | None,
        read_only: bool,
        allow_remote: bool,
    ) -> None:
        self.token = token
        self.authorize = authorize
        self.read_only = read_only
        self.allow_remote = allow_remote
        self._secret = secrets.token_bytes(32)

    @property
    def has_auth(self) -> bool:
        """Whether a token or the host app's check protects the dashboard."""
        return self.token is not None or self.authorize is not None

    @property
    def can_act(self) -> bool:
        """Whether actions are offered at all: not read-only, and protected."""
        return not self.read_only and self.has_auth

    def _sign(self, what: str) -> str:
        return hmac.new(self._secret, what.encode(), hashlib.sha256).hexdigest()

    def session_value(self) -> str:
        """The session cookie of a user who gave the token (changes with the token and
        with each start of the process)."""
        assert self.token is not None
        return self._sign("session:" + self.token)

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token (in constant time)."""
        return self.token is not None and hmac.compare_digest(
            given.encode("utf-8", "replace"), self.token.encode("utf-8")
        )

    async def check(self, request: Request) -> bool:
        """Whether the request is authenticated; raise if it may not be served at all.

        :raises HTTPError: 403 for a client off this host when nothing protects the
            dashboard (unless ``allow_remote``), or when the host app's check says no
        """
        if self.authorize is not None:
            allowed = self.authorize(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                raise HTTPError(403, "the application's authorization refused this request")
            return True
        if self.token is not None:
            header = request.headers.get("authorization", "")
            if header.lower().startswith("bearer ") and self.token_matches(header[7:].strip()):
                return True
            session = request.cookies.get(SESSION_COOKIE, "")
            return hmac.compare_digest(session, self.session_value())
        if not request.is_loopback and not self.allow_remote:
            raise HTTPError(
                403,
                "this dashboard has no token and serves only clients on this host; give it "
                "a token (or an authorize hook), or allow_remote=True to serve anyone",
            )
        return False

    def csrf_for(self, cookie_value: str) -> str:
        """The CSRF token that forms carry for a browser holding ``cookie_value``."""
        return self._sign("csrf:" + cookie_value)

    def check_csrf(self, request: Request, fields: Mapping[str, str]) -> None:
        """Refuse a form not sent by a page of this dashboard.

        :raises HTTPError: 403 without a matching CSRF token, or from another origin
        """
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise HTTPError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host:
                raise HTTPError(403, "request from another origin refused")
        elif origin == "null":
            raise HTTPError(403, "request from an opaque origin refused")
        cookie_value = request.cookies.get(CSRF_COOKIE, "")
        given = fields.get("csrf", "")
        if not cookie_value or not hmac.compare_digest(given, self.csrf_for(cookie_value)):
            raise HTTPError(403, "missing or wrong CSRF token; reload the page and try again")
