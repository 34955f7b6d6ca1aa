"""The dashboard as a bare ASGI application (no framework): routing, the pages, the
actions and the live feeds, behind the access rules of ``_security``."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import AsyncIterator, Mapping
from html import escape
from typing import Final
from urllib.parse import quote

import anyio
import attrs

from .._api.manager import WorkManager
from .._core.data import JSONValue
from .._core.errors import (
    InvalidRequestError,
    NotRunningError,
    StoreError,
    UnknownWorkerError,
    WorkManagerError,
)
from .._core.model import WorkInfo, WorkQuery
from .._core.validators import check_name
from ..stores._browse import MAX_PAGE, Overview
from . import _assets, _charts, _live
from . import _pages as pages
from ._http import HTTPError, Receive, Request, Response, Scope, Send, cookie, redirect, text
from ._params import browse_filter, qs, safe_next, work_id
from ._security import CSRF_COOKIE, SESSION_COOKIE, Authorize, Guard, Redact, default_redact

#: The overview's windows: name -> (seconds, bucket seconds).
WINDOWS: Final = {"15m": (900, 30), "1h": (3600, 60), "6h": (21600, 600), "24h": (86400, 1800)}
#: The most works a chain graph draws.
MAX_GRAPH: Final = 60


class Dashboard:
    """The dashboard of a :class:`~wm_async.WorkManager`: an ASGI application serving
    HTML pages (overview, works, a work), actions and live updates.

    Mount it in Starlette or FastAPI (``app.mount("/wm", dashboard)``), in Quart or any
    ASGI app with :func:`~wm_async.dashboard.mount`, in aiohttp with
    :func:`wm_async.dashboard.aiohttp.setup`, or run it alone with ``wm-async dashboard``.
    The manager must be running while it serves (a producer, ``run_work=False``, is
    enough).

    Without ``token`` or ``authorize`` it is read-only and serves only clients on this
    host (``allow_remote=True`` serves anyone: say so only behind your own protection).
    With either, every page and feed needs it, and actions are offered (unless
    ``read_only``); every action also needs the CSRF token of a page of the dashboard.

    :param manager: the manager whose works it shows
    :param token: a secret that users give once (``/login``, or ``?token=`` on any
        page's URL, or ``Authorization: Bearer``); at least 16 characters
    :param authorize: the host app's own check instead of a token: called with each
        request (:class:`~wm_async.dashboard.Request`), sync or async, returns whether
        to serve it
    :param read_only: offer no action and refuse every one
    :param redact: ``(work, field, data) -> data``, applied to input, output and progress
        before they are shown (default: :func:`default_redact`, masking values whose key
        names a secret)
    :param allow_remote: serve clients off this host even without a token or hook
    :param title: the title of the pages
    :raises InvalidRequestError: for an invalid argument
    """

    def __init__(
        self,
        manager: WorkManager,
        *,
        token: str | None = None,
        authorize: Authorize | None = None,
        read_only: bool = False,
        redact: Redact | None = None,
        allow_remote: bool = False,
        title: str = "wm_async",
    ) -> None:
        if not isinstance(manager, WorkManager):
            raise InvalidRequestError("manager", manager, "expected a WorkManager")
        given: object = token  # checked whatever the annotation says
        if given is not None and (not isinstance(given, str) or len(given) < 16):
            raise InvalidRequestError("token", "***", "expected a string of 16 characters or more")
        if token is not None and authorize is not None:
            raise InvalidRequestError(
                "authorize", authorize, "give a token or authorize, not both"
            )
        for name, fn in (("authorize", authorize), ("redact", redact)):
            if fn is not None and not callable(fn):
                raise InvalidRequestError(name, fn, "expected a callable")
        for name, flag in (("read_only", read_only), ("allow_remote", allow_remote)):
            if not isinstance(flag, bool):
                raise InvalidRequestError(name, flag, "expected True or False")
        self.manager = manager
        self.title = str(title)
        self._guard = Guard(
            token=token, authorize=authorize, read_only=read_only, allow_remote=allow_remote
        )
        self._redact = redact or default_redact
        self._log = _live.TransitionLog()
        self._overviews = _live.SharedRead(self._read_overview)

    def __repr__(self) -> str:
        mode = "read-only" if not self._guard.can_act else "actions"
        return f"Dashboard({self.manager!r}, {mode})"

    # -- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (``http``; ``lifespan`` is acknowledged)."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                reply = message["type"].replace("startup", "startup.complete")
                reply = reply.replace("shutdown", "shutdown.complete")
                await send({"type": reply})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        cookies: list[str] = []
        try:
            request = Request(scope, receive)
            response = await self._handle(request, receive, send, cookies)
        except HTTPError as exc:
            response = text(exc.status, exc.message)
        except NotRunningError as exc:
            response = text(503, f"the work manager is not running: {exc}")
        except StoreError as exc:
            response = text(503, f"the store failed: {exc}")
        if response is not None:
            response.cookies += cookies
            await response.send(send)

    async def _handle(
        self, request: Request, receive: Receive, send: Send, cookies: list[str]
    ) -> Response | None:
        path, method = request.path, request.method
        if path == "/static/app.css":
            return Response(_assets.CSS, content_type="text/css; charset=utf-8")
        if path == "/static/app.js":
            return Response(_assets.JS, content_type="text/javascript; charset=utf-8")
        guard = self._guard
        authenticated = await guard.check(request)
        if path == "/login" or path == "/logout":
            return await self._login(request, cookies)
        if guard.has_auth and not authenticated:
            if guard.token is not None and "token" in request.query:
                return self._token_login(request, request.query["token"], request.path)
            if method == "GET" and not path.startswith(("/events", "/metrics")):
                return redirect(f"{request.root}/login?next={quote(path)}")
            raise HTTPError(401, "log in first: this dashboard needs its token")
        if path.startswith("/actions/"):
            if method != "POST":
                raise HTTPError(405, "actions take POST")
            return await self._act(request, path[len("/actions/") :])
        if method != "GET":
            raise HTTPError(405, f"{method} is not served here")
        page = self._page(request, cookies)
        if path == "/":
            return await self._overview(request, page)
        if path == "/works":
            return await self._works(request, page)
        if path.startswith("/works/"):
            return await self._work(request, page, path[len("/works/") :])
        if path == "/metrics":
            return await self._metrics()
        if path.startswith("/events/"):
            await self._events(request, page, path[len("/events/") :], receive, send)
            return None
        raise HTTPError(404, f"no page {path}")

    def _page(self, request: Request, cookies: list[str]) -> pages.Page:
        csrf_cookie = request.cookies.get(CSRF_COOKIE, "")
        if not re.fullmatch(r"[0-9a-f]{32}", csrf_cookie):
            csrf_cookie = secrets.token_hex(16)
            cookies.append(cookie(CSRF_COOKIE, csrf_cookie, path=request.root or "/"))
        flash, error = "", False
        msg, sig = request.query.get("msg", ""), request.query.get("sig", "")
        if msg and hmac.compare_digest(sig, self._guard.csrf_for("flash:" + msg)):
            flash, error = msg, request.query.get("err") == "1"
        guard = self._guard
        return pages.Page(
            root=request.root,
            title=self.title,
            csrf=guard.csrf_for(csrf_cookie),
            can_act=guard.can_act,
            read_only=guard.read_only,
            flash=flash,
            error=error,
            login=guard.token is not None,
        )

    # -- login (token)

    async def _login(self, request: Request, cookies: list[str]) -> Response:
        guard = self._guard
        if guard.token is None:
            raise HTTPError(404, "this dashboard has no token to log in with")
        target = request.query.get("next", "/")
        if request.path == "/logout":
            if request.method != "POST":
                raise HTTPError(405, "log out with POST")
            guard.check_csrf(request, await request.form())
            return redirect(
                f"{request.root}/login",
                cookies=[cookie(SESSION_COOKIE, "", path=request.root or "/", max_age=0)],
            )
        if request.method == "POST":
            fields = await request.form()
            guard.check_csrf(request, fields)
            if not guard.token_matches(fields.get("token", "")):
                raise HTTPError(403, "wrong token")
            return self._token_login(request, fields["token"], fields.get("next", "/"))
        if "token" in request.query:
            return self._token_login(request, request.query["token"], target)
        page = self._page(request, cookies)
        body = (
            f'<form method="post" action="{escape(request.root)}/login">'
            f'<input type="hidden" name="csrf" value="{page.csrf}">'
            f'<input type="hidden" name="next" value="{safe_next(target)}">'
            '<label>token <input type="password" name="token" autofocus></label> '
            '<button type="submit">log in</button></form>'
        )
        return Response(pages.layout(attrs.evolve(page, login=False), "Log in", body))

    def _token_login(self, request: Request, given: str, target: str) -> Response:
        if not self._guard.token_matches(given):
            raise HTTPError(403, "wrong token")
        session = cookie(SESSION_COOKIE, self._guard.session_value(), path=request.root or "/")
        return redirect(f"{request.root}{safe_next(target)}", cookies=[session])

    # -- pages

    def _window(self, request: Request) -> str:
        window = request.query.get("window", "1h")
        if window not in WINDOWS:
            raise HTTPError(
                400, f"unknown window {window!r}; expected one of {', '.join(WINDOWS)}"
            )
        return window

    async def _read_overview(self, window: str) -> tuple[Overview, frozenset[str]]:
        """The overview's aggregates and the paused workers, read from the store."""
        seconds, bucket = WINDOWS[window]
        manager = self.manager
        now = manager.clock.now()
        ov = await manager.store.overview(now=now, since=now - seconds, bucket=bucket)
        return ov, await manager.paused_workers()

    def _render_overview(
        self, page: pages.Page, window: str, read: tuple[Overview, frozenset[str]]
    ) -> str:
        ov, paused = read
        slow = []
        for record in ov.running:
            usual = ov.run_times.get(record.worker)
            if usual is None or record.started_at is None:
                continue
            elapsed = ov.now - record.started_at
            # Longer than usual: three times the worker's mean run in the window, and
            # at least a second more.
            if elapsed > max(3 * usual[1], usual[1] + 1.0):
                slow.append((record.to_info(), elapsed, usual[1]))
        return pages.overview_body(
            page, ov, window=window, windows=WINDOWS, paused=paused, slow=slow
        )

    async def _overview(self, request: Request, page: pages.Page) -> Response:
        window = self._window(request)
        read = await self._overviews.get(window, fresh=True)
        body = self._render_overview(page, window, read)
        live = f"{request.root}/events/overview?window={window}"
        return Response(pages.layout(page, "Overview", body, live=live))

    async def _works(self, request: Request, page: pages.Page) -> Response:
        flt, params = browse_filter(request)
        manager = self.manager
        result = await manager.store.browse(flt)
        infos = [r.to_info() for r in result.records]
        # The workers a select offers: registered here, paused, or on this page (a
        # count over every work would cost more than the page).
        workers = {i.worker for i in infos} | set(await manager.paused_workers())
        registered = manager.statistics()["workers"]
        if isinstance(registered, list):
            workers.update(str(w) for w in registered)
        now = manager.clock.now()
        pager = []
        if flt.before is not None:
            first = {k: v for k, v in params.items() if k != "before"}
            pager.append(f'<a href="{escape(page.root)}/works?{escape(qs(first))}">newest</a>')
        if result.more:
            last = result.records[-1]
            nxt = {**params, "before": f"{last.enqueued_at!r}_{last.id}"}
            pager.append(
                f'<a id="next" href="{escape(page.root)}/works?{escape(qs(nxt))}">older →</a>'
            )
        ids = ",".join(str(i.id) for i in infos)
        live = f"{request.root}/events/works?ids={ids}" if ids else None
        body = (
            pages.filter_form(page, params, workers)
            + pages.works_table(page, infos, now)
            + f'<div class="pager">{" ".join(pager)}</div>'
        )
        return Response(pages.layout(page, "Works", body, live=live))

    def _shown(self, info: WorkInfo) -> dict[str, Mapping[str, JSONValue]]:
        out = {}
        for field in ("input", "output", "progress"):
            try:
                out[field] = self._redact(info, field, getattr(info, field))
            except Exception:  # noqa: BLE001  # a failing hook must not show the data
                out[field] = {"***": "the redaction hook failed; nothing is shown"}
        return out

    async def _work(self, request: Request, page: pages.Page, text_id: str) -> Response:
        wid = work_id(text_id)
        manager = self.manager
        info = await manager.get_work_info(wid)
        if info is None:
            raise HTTPError(404, f"no work {wid} (never enqueued, or pruned)")
        explanation = await manager.explain(wid)
        now = manager.clock.now()
        shown = self._shown(info)
        graph = await self._graph(page, wid)
        body = (
            pages.work_live(page, info, shown, explanation, now)
            + pages.work_static(page, info, shown)
            + f"<h2>Chain</h2>{graph}"
            + f"<h2>Timeline</h2>{pages.timeline(self._timeline(info))}"
        )
        live = f"{request.root}/events/work/{wid}"
        return Response(pages.layout(page, f"Work {wid}", body, live=live))

    def _timeline(self, info: WorkInfo) -> list[tuple[float, str]]:
        ts = [(info.enqueued_at.timestamp(), "enqueued")]
        if info.started_at is not None:
            ts.append(
                (
                    info.started_at.timestamp(),
                    f"last run started (attempt {info.run_attempt_count})",
                )
            )
        if info.finished_at is not None:
            ts.append((info.finished_at.timestamp(), f"finished {info.state.value}"))
        ts += self._log.entries(str(info.id))
        return sorted(ts)

    async def _graph(self, page: pages.Page, wid: str) -> str:
        store = self.manager.store
        seen, frontier, edges = {wid}, {wid}, set()
        while frontier and len(seen) < MAX_GRAPH:
            found = await store.edges(frontier)
            edges.update(found)
            frontier = {n for e in found for n in e} - seen
            seen |= frontier
        if len(seen) == 1:
            return '<p class="muted">not chained</p>'
        records = {r.id: r for r in await store.get(list(seen)[:MAX_GRAPH])}
        nodes = {i: (r.worker, r.state.value) for i, r in records.items()}
        more = (
            '<p class="muted">(the chain is larger; part shown)</p>'
            if len(seen) >= MAX_GRAPH
            else ""
        )
        return _charts.chain(nodes, sorted(edges), focus=wid, link=f"{page.root}/works/") + more

    async def _metrics(self) -> Response:
        try:
            # Another module's, possibly absent (or without prometheus_client).
            from ..metrics import exposition  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise HTTPError(
                404,
                f"metrics are not available: wm_async.metrics or prometheus_client is missing ({exc})",
            ) from None
        try:
            body, content_type = await exposition(self.manager)
        except ImportError as exc:  # prometheus_client imported on first use
            raise HTTPError(404, f"metrics are not available: {exc}") from None
        return Response(body, content_type=content_type)

    # -- actions

    async def _act(self, request: Request, action: str) -> Response:
        guard = self._guard
        if action not in ("cancel", "run-again", "run-now", "prune", "pause", "resume"):
            raise HTTPError(404, f"no action {action!r}")
        if guard.read_only:
            raise HTTPError(403, "this dashboard is read-only")
        if not guard.has_auth:
            raise HTTPError(403, "actions need a token or the application's authorize hook")
        fields = await request.form()
        guard.check_csrf(request, fields)
        back = safe_next(fields.get("next", "/"))
        manager = self.manager
        try:
            if action in ("pause", "resume"):
                name = fields.get("worker", "")
                check_name("worker", name)
                await (manager.pause_worker if action == "pause" else manager.resume_worker)(name)
                message = f"worker {name} {action}d"
            elif action == "prune":
                message = f"pruned {await manager.prune_work()} finished work(s)"
            else:
                wid = work_id(fields.get("id", ""))
                if await manager.get_work_info(wid) is None:
                    raise HTTPError(404, f"no work {wid}")
                if action == "cancel":
                    if not await manager.cancel_work_by_id(wid):
                        raise HTTPError(409, "the work is already finished: nothing to cancel")
                    message = "work cancelled"
                elif action == "run-now":
                    await manager.run_now(wid)
                    message = "the work is due now (its constraints and capacity still apply)"
                else:
                    new = await manager.run_again(wid)
                    message = f"enqueued again as the new work {new.id}"
                    back = f"/works/{new.id}"
        except UnknownWorkerError as exc:
            raise HTTPError(404, str(exc)) from None
        except InvalidRequestError as exc:
            raise HTTPError(409 if action.startswith("run") else 400, str(exc)) from None
        except WorkManagerError as exc:
            if isinstance(exc, NotRunningError | StoreError):
                raise
            raise HTTPError(409, str(exc)) from None
        sig = guard.csrf_for("flash:" + message)
        return redirect(f"{request.root}{back}?{qs({'msg': message, 'sig': sig})}")

    # -- live

    async def _events(
        self, request: Request, page: pages.Page, what: str, receive: Receive, send: Send
    ) -> None:
        manager = self.manager
        if what == "overview":
            window = self._window(request)

            async def overview() -> AsyncIterator[bytes]:
                last = ""
                while True:
                    read = await self._overviews.get(window)
                    html = self._render_overview(page, window, read)
                    if html != last:
                        last = html
                        yield _live.event({"replace": {"overview": html}})
                    await anyio.sleep(2.0)

            await _live.stream(send, receive, overview)
            return
        if what == "works":
            raw = request.query.get("ids", "")
            ids = [work_id(i) for i in raw.split(",") if i]
            if not ids or len(ids) > MAX_PAGE:
                raise HTTPError(400, f"expected 1 to {MAX_PAGE} work ids")
            query = WorkQuery(ids=ids)

            async def rows() -> AsyncIterator[bytes]:
                async with manager.watch(query) as infos:
                    async for info in infos:
                        self._log.saw(info, manager.clock.now())
                        html = pages.work_row(page, info, manager.clock.now())
                        yield _live.event({"replace": {f"w-{info.id}": html}})

            await _live.stream(send, receive, rows)
            return
        if what.startswith("work/"):
            wid = work_id(what[len("work/") :])
            if await manager.get_work_info(wid) is None:
                raise HTTPError(404, f"no work {wid}")

            async def work() -> AsyncIterator[bytes]:
                async with manager.watch(WorkQuery(ids={wid})) as infos:
                    async for info in infos:
                        now = manager.clock.now()
                        seen = self._log.saw(info, now)
                        explanation = await manager.explain(wid)
                        html = pages.work_live(page, info, self._shown(info), explanation, now)
                        data: dict[str, object] = {"replace": {"live-work": html}}
                        if seen:
                            data["append"] = {"timeline": pages.timeline_item(now, seen)}
                        yield _live.event(data)

            await _live.stream(send, receive, work)
            return
        raise HTTPError(404, f"no feed {what}")
