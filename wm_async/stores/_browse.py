"""The reads behind the dashboard (``wm_async.dashboard``): a filtered list of works with
keyset pagination (:meth:`Store.browse`), the aggregates of its overview
(:meth:`Store.overview`) and the edges of a chain (:meth:`Store.edges`).

The types are here, with the reference implementations over :meth:`Store.query` and
:meth:`Store.get` that the memory store (and a store of an app's own) uses. The SQL
stores answer from indexes (``_sqlite_browse``, ``_postgres_browse``; migration 008),
so that a page costs the same with a million works as with a hundred.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._core.errors import InvalidRequestError
from .._core.model import (
    FINISHED_STATES,
    WorkQuery,
    WorkState,
)

if TYPE_CHECKING:
    from .._core.record import WorkRecord

_STATES: Final = {s.value: s for s in WorkState}
_FINISHED_ORDER: Final = (WorkState.SUCCEEDED, WorkState.FAILED, WorkState.CANCELLED)
#: The most works one page may hold.
MAX_PAGE: Final = 500
#: The most buckets a chart may have.
MAX_BUCKETS: Final = 240
#: The most RUNNING works and due works the overview lists.
MAX_LISTED: Final = 200
_ID_PREFIX: Final = re.compile(r"[0-9a-f-]{1,36}")


def _states(value: Iterable[WorkState]) -> frozenset[WorkState]:
    return frozenset(value)


@attrs.frozen(kw_only=True)
class BrowseFilter:
    """Which works a page lists, newest first (by ``enqueued_at``, then id).

    :ivar states: only these states (empty: any)
    :ivar worker: only this worker's works
    :ivar tag: only works with this tag
    :ivar unique_name: only works under this unique name
    :ivar id_prefix: only works whose id starts with this (lower-case hex and dashes)
    :ivar since: only works enqueued at or after this time (UTC epoch seconds)
    :ivar until: only works enqueued before this time
    :ivar before: the keyset cursor: only works after this ``(enqueued_at, id)`` in the
        order (older, or as old with a smaller id); the last work of the previous page
    :ivar limit: the most works on the page (1 to :data:`MAX_PAGE`)
    :raises InvalidRequestError: for a limit out of range or a malformed id prefix
    """

    states: frozenset[WorkState] = attrs.field(default=frozenset(), converter=_states)
    worker: str | None = None
    tag: str | None = None
    unique_name: str | None = None
    id_prefix: str | None = None
    since: float | None = None
    until: float | None = None
    before: tuple[float, str] | None = None
    limit: int = 50

    def __attrs_post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int):
            raise InvalidRequestError("limit", self.limit, "expected an integer")
        if not 1 <= self.limit <= MAX_PAGE:
            raise InvalidRequestError("limit", self.limit, f"expected 1 to {MAX_PAGE}")
        if self.id_prefix is not None and not _ID_PREFIX.fullmatch(self.id_prefix):
            raise InvalidRequestError(
                "id_prefix", self.id_prefix, "expected lower-case hex digits and dashes"
            )
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidRequestError(name, value, "expected a finite time")

    def matches(self, record: WorkRecord) -> bool:
        """Whether ``record`` passes the filter (the cursor and limit aside)."""
        return (
            (not self.states or record.state in self.states)
            and (self.worker is None or record.worker == self.worker)
            and (self.tag is None or self.tag in record.tags)
            and (self.unique_name is None or record.unique_name == self.unique_name)
            and (self.id_prefix is None or record.id.startswith(self.id_prefix))
            and (self.since is None or record.enqueued_at >= self.since)
            and (self.until is None or record.enqueued_at < self.until)
            and (self.before is None or (record.enqueued_at, record.id) < self.before)
        )


@attrs.frozen(kw_only=True)
class WorkPage:
    """One page of :meth:`Store.browse`.

    :ivar records: the works, newest first
    :ivar more: whether works follow (the next page starts after the last of these)
    """

    records: list[WorkRecord]
    more: bool


@attrs.frozen(kw_only=True)
class TimeBucket:
    """The works that finished in one bucket of time.

    :ivar start: the bucket's start (UTC epoch seconds)
    :ivar succeeded: how many SUCCEEDED
    :ivar failed: how many FAILED
    :ivar cancelled: how many were CANCELLED
    :ivar started: how many of them had started a run whose lateness is known
    :ivar late_mean: their mean start lateness, in seconds (``None``: none known)
    :ivar late_max: the largest start lateness, in seconds
    """

    start: float
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    started: int = 0
    late_mean: float | None = None
    late_max: float | None = None


@attrs.frozen(kw_only=True)
class Overview:
    """The aggregates of the dashboard's overview, as one store read them.

    :ivar now: the time they were read for
    :ivar since: the window's start: finished works are counted from then
    :ivar counts: ``(worker, state, n)``: every unfinished work, and the works finished
        since ``since``
    :ivar tag_counts: ``(tag, state, n)``, counted likewise (a work counts once per tag)
    :ivar buckets: the finished works of the window, by finishing time
    :ivar due: the ENQUEUED works due at ``now`` (their delay over), longest due first
    :ivar due_count: how many ENQUEUED works are due at ``now``
    :ivar running: the RUNNING works, longest running first
    :ivar run_times: ``worker -> (n, mean seconds)`` of the runs that finished (succeeded
        or failed) in the window: what is usual for the worker
    """

    now: float
    since: float
    counts: list[tuple[str, WorkState, int]]
    tag_counts: list[tuple[str, WorkState, int]]
    buckets: list[TimeBucket]
    due: list[WorkRecord]
    due_count: int
    running: list[WorkRecord]
    run_times: dict[str, tuple[int, float]]


def check_window(now: float, since: float, bucket: float) -> int:
    """How many buckets of ``bucket`` seconds cover ``since`` to ``now``.

    :raises InvalidRequestError: for a window that is empty, not finite, or needs more
        than :data:`MAX_BUCKETS` buckets
    """
    for name, value in (("now", now), ("since", since), ("bucket", bucket)):
        if not math.isfinite(value):
            raise InvalidRequestError(name, value, "expected a finite number")
    if bucket <= 0 or since >= now:
        raise InvalidRequestError("bucket", bucket, "expected a positive bucket and since < now")
    n = math.ceil((now - since) / bucket)
    if n > MAX_BUCKETS:
        raise InvalidRequestError("bucket", bucket, f"more than {MAX_BUCKETS} buckets")
    return n


class Tally:
    """Accumulates the overview's aggregates, row by row (every store uses it, so they
    count alike)."""

    def __init__(self, now: float, since: float, bucket: float) -> None:
        self.now, self.since, self.bucket = now, since, bucket
        self.n = check_window(now, since, bucket)
        self.counts: dict[tuple[str, WorkState], int] = {}
        self.tag_counts: dict[tuple[str, WorkState], int] = {}
        self._done = [[0, 0, 0] for _ in range(self.n)]
        self._late: list[list[float]] = [[0, 0.0, -math.inf] for _ in range(self.n)]
        self._runs: dict[str, list[float]] = {}

    def count(self, worker: str, state: WorkState, n: int = 1) -> None:
        """Count ``n`` works of ``worker`` in ``state``."""
        key = (worker, state)
        self.counts[key] = self.counts.get(key, 0) + n

    def count_tags(self, tags: Iterable[str], state: WorkState, n: int = 1) -> None:
        """Count ``n`` works with each of ``tags`` in ``state``."""
        for tag in tags:
            key = (tag, state)
            self.tag_counts[key] = self.tag_counts.get(key, 0) + n

    def index(self, finished_at: float) -> int:
        """The bucket of a time in the window (-1: before it)."""
        if finished_at < self.since:
            return -1
        return min(int((finished_at - self.since) // self.bucket), self.n - 1)

    def finished(
        self,
        i: int,
        state: WorkState,
        worker: str,
        *,
        n: int = 1,
        runs: int = 0,
        run_total: float = 0.0,
        lates: int = 0,
        late_total: float = 0.0,
        late_max: float | None = None,
    ) -> None:
        """Count ``n`` works of ``worker`` that finished in ``state`` in bucket ``i``:
        ``runs`` of them ran (SUCCEEDED or FAILED with a start time) for ``run_total``
        seconds in all, and ``lates`` started ``late_total`` seconds late in all, at
        most ``late_max``."""
        if not 0 <= i < self.n:
            return
        self._done[i][_FINISHED_ORDER.index(state)] += n
        if lates:
            slot = self._late[i]
            slot[0] += lates
            slot[1] += late_total
            slot[2] = max(slot[2], -math.inf if late_max is None else late_max)
        if runs:
            run = self._runs.setdefault(worker, [0, 0.0])
            run[0] += runs
            run[1] += run_total

    def add_rows(
        self,
        counts: Iterable[Sequence[Any]],
        tag_counts: Iterable[Sequence[Any]],
        finished: Iterable[Sequence[Any]],
    ) -> None:
        """Count what the SQL stores' overview queries return (states as stored text):
        ``(worker, state, n)`` of the unfinished works, ``(tag, state, n)`` of them, and
        ``(bucket, state, worker, tags, n, runs, run_total, lates, late_total,
        late_max)`` of the works finished in the window."""
        for worker, state, n in counts:
            self.count(worker, _STATES[state], n)
        for tag, state, n in tag_counts:
            self.count_tags((tag,), _STATES[state], n)
        for i, state, worker, tags, n, runs, run_total, lates, late_total, late_max in finished:
            self.count(worker, _STATES[state], n)
            self.count_tags(tag_list(tags), _STATES[state], n)
            self.finished(
                min(i, self.n - 1),
                _STATES[state],
                worker,
                n=n,
                runs=runs,
                run_total=run_total,
                lates=lates,
                late_total=late_total,
                late_max=late_max,
            )

    def overview(
        self, due: list[WorkRecord], due_count: int, running: list[WorkRecord]
    ) -> Overview:
        """The aggregates counted so far."""
        buckets = []
        for i, (done, late) in enumerate(zip(self._done, self._late, strict=True)):
            known = int(late[0])
            buckets.append(
                TimeBucket(
                    start=self.since + i * self.bucket,
                    succeeded=done[0],
                    failed=done[1],
                    cancelled=done[2],
                    started=known,
                    late_mean=late[1] / known if known else None,
                    late_max=late[2] if known else None,
                )
            )
        return Overview(
            now=self.now,
            since=self.since,
            counts=sorted(((w, s, n) for (w, s), n in self.counts.items()), key=_key),
            tag_counts=sorted(((t, s, n) for (t, s), n in self.tag_counts.items()), key=_key),
            buckets=buckets,
            due=due,
            due_count=due_count,
            running=running,
            run_times={w: (int(r[0]), r[1] / r[0]) for w, r in self._runs.items() if r[0]},
        )


@functools.lru_cache(maxsize=4096)
def tag_list(text: str) -> tuple[str, ...]:
    """The tags of a stored ``tags`` column (a JSON array of strings)."""
    found = json.loads(text)
    return tuple(t for t in found if isinstance(t, str)) if isinstance(found, list) else ()


def _key(row: tuple[str, WorkState, int]) -> tuple[str, str]:
    return row[0], row[1].value


# -- the reference implementations (over Store.query)


def browse_records(records: Iterable[WorkRecord], flt: BrowseFilter) -> WorkPage:
    """The page of ``records`` that ``flt`` selects (newest first)."""
    found = sorted(
        (r for r in records if flt.matches(r)), key=lambda r: (r.enqueued_at, r.id), reverse=True
    )
    return WorkPage(records=found[: flt.limit], more=len(found) > flt.limit)


def browse_query(flt: BrowseFilter) -> WorkQuery:
    """The narrowest :class:`WorkQuery` holding every work ``flt`` selects."""
    if flt.states:
        return WorkQuery(states=flt.states)
    if flt.unique_name is not None:
        return WorkQuery(unique_names={flt.unique_name})
    if flt.tag is not None:
        return WorkQuery(tags={flt.tag})
    if flt.worker is not None:
        return WorkQuery(tags={flt.worker})  # the worker name is always a tag
    return WorkQuery(states=set(WorkState))


def overview_records(
    records: Sequence[WorkRecord],
    *,
    now: float,
    since: float,
    bucket: float,
    late: Mapping[str, float] | None = None,
) -> Overview:
    """The overview of ``records`` (every work of the store); ``late``: how late each
    work's last run started, where known."""
    tally = Tally(now, since, bucket)
    due: list[WorkRecord] = []
    running: list[WorkRecord] = []
    for r in records:
        finished = r.state in FINISHED_STATES
        if finished and (r.finished_at is None or r.finished_at < since):
            continue
        tally.count(r.worker, r.state)
        tally.count_tags(r.tags, r.state)
        if finished:
            assert r.finished_at is not None
            ran = r.started_at is not None and r.state is not WorkState.CANCELLED
            known = None if late is None or r.started_at is None else late.get(r.id)
            tally.finished(
                tally.index(r.finished_at),
                r.state,
                r.worker,
                runs=int(ran),
                run_total=r.finished_at - r.started_at if ran and r.started_at else 0.0,
                lates=int(known is not None),
                late_total=known or 0.0,
                late_max=known,
            )
        elif r.state is WorkState.RUNNING:
            running.append(r)
        elif r.state is WorkState.ENQUEUED and r.next_run_at is not None and r.next_run_at <= now:
            due.append(r)
    due.sort(key=lambda r: (r.next_run_at or 0.0, r.id))
    running.sort(key=lambda r: (r.started_at or 0.0, r.id))
    return tally.overview(due[:MAX_LISTED], len(due), running[:MAX_LISTED])
