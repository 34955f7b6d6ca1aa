"""The dashboard: a web app showing a store's works (overview, list, a work), with
actions (cancel, run again, run now, prune, pause and resume a worker) and live updates,
server-rendered with a little JavaScript and charts as inline SVG (nothing to build,
nothing fetched from elsewhere). See docs/dashboard.md.

It is a bare ASGI application, :class:`Dashboard`:

- Starlette or FastAPI: ``app.mount("/wm", Dashboard(manager, token=...))``;
- Quart, or any ASGI app: ``app.asgi_app = mount(app.asgi_app, "/wm", dashboard)``;
- aiohttp: ``wm_async.dashboard.aiohttp.setup(app, dashboard, prefix="/wm")``;
- on its own: ``wm-async dashboard --store URL`` (on 127.0.0.1 by default).
"""

from __future__ import annotations

from ._app import WINDOWS, Dashboard
from ._http import HTTPError, Receive, Request, Scope, Send
from ._mount import mount
from ._security import Authorize, Redact, default_redact

__all__ = (
    "WINDOWS",
    "Authorize",
    "Dashboard",
    "HTTPError",
    "Redact",
    "Request",
    "default_redact",
    "mount",
    "Receive",
    "Scope",
    "Send",
)
