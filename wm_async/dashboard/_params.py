"""Reading what a request asks for: the list's filters, work ids, times, where to go
back to after an action."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

from .._core.errors import InvalidRequestError
from .._core.model import WorkState
from .._core.validators import check_name
from ..stores._browse import MAX_PAGE, BrowseFilter
from ._http import HTTPError, Request

_SAFE_NEXT: Final = re.compile(r"/[A-Za-z0-9/_\-]*")
_STATES: Final = {s.value: s for s in WorkState}


def browse_filter(request: Request) -> tuple[BrowseFilter, dict[str, str]]:
    """The list's filter from the query, and the filters given (for links).

    :raises HTTPError: 400 for an unknown filter or a bad value
    """
    q = request.query
    known = {
        "state",
        "worker",
        "tag",
        "unique",
        "q",
        "since",
        "until",
        "before",
        "limit",
        "msg",
        "sig",
        "err",
    }
    unknown = sorted(set(q) - known)
    if unknown:
        raise HTTPError(400, f"unknown filter {unknown[0]!r}")
    params = {k: v for k, v in q.items() if v and k not in ("msg", "sig", "err")}
    try:
        states = set()
        if "state" in params:
            for s in params["state"].split(","):
                if s not in _STATES:
                    raise HTTPError(400, f"unknown state {s!r}")
                states.add(_STATES[s])
        limit_text = params.get("limit", "50")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise HTTPError(400, f"limit must be 1 to {MAX_PAGE}")
        for name in ("worker", "tag", "unique"):
            if name in params:
                check_name(name, params[name])
        prefix = params.get("q", "").strip().lower() or None
        before = None
        if "before" in params:
            at, _, wid = params["before"].partition("_")
            try:
                before = (float(at), str(uuid.UUID(wid)))
            except ValueError:
                raise HTTPError(400, "malformed page cursor") from None
        flt = BrowseFilter(
            states=states,
            worker=params.get("worker"),
            tag=params.get("tag"),
            unique_name=params.get("unique"),
            id_prefix=prefix,
            since=_time(params, "since"),
            until=_time(params, "until"),
            before=before,
            limit=int(limit_text),
        )
    except InvalidRequestError as exc:
        raise HTTPError(400, str(exc)) from None
    return flt, params


def qs(params: Mapping[str, str]) -> str:
    """A query string."""
    return urlencode(params)


def safe_next(target: str) -> str:
    """A path inside the dashboard to go back to (anything else: the overview)."""
    return target if _SAFE_NEXT.fullmatch(target) and not target.startswith("//") else "/"


def work_id(value: str) -> str:
    """A work id in its canonical form, or a 400."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPError(400, f"not a work id: {value[:64]!r}") from None


def _time(params: Mapping[str, str], name: str) -> float | None:
    value = params.get(name)
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPError(
            400, f"{name}: expected an ISO date and time, like 2030-01-31T12:00"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
