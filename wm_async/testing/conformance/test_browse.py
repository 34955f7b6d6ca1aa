"""``Store.browse``, ``Store.overview`` and ``Store.edges``: the dashboard's reads (a
filtered page newest first after a keyset cursor, the overview's aggregates, the edges
of a chain)."""

from __future__ import annotations

import pytest

from ..._core import lifecycle
from ..._core.errors import InvalidRequestError
from ..._core.model import WorkState
from ...stores import Store
from ...stores._browse import BrowseFilter
from ._helpers import NOW, claim_due, ids, record


async def test_browse_pages_newest_first_and_filters(store: Store) -> None:
    works = [
        record("a" if i % 2 else "b", at=NOW - 100 + i, tags={"t"} if i < 3 else set())
        for i in range(6)
    ]
    await store.insert(works)
    newest_first = [w.id for w in reversed(works)]
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.browse(BrowseFilter(limit=4, before=cursor))
        seen += ids(page.records)
        if not page.more:
            break
        cursor = (page.records[-1].enqueued_at, page.records[-1].id)
    assert seen == newest_first

    async def find(**fields: object) -> list[str]:
        return ids((await store.browse(BrowseFilter(**fields))).records)  # type: ignore[arg-type]

    assert await find(worker="a") == [w.id for w in reversed(works) if w.worker == "a"]
    assert await find(tag="t") == [w.id for w in reversed(works[:3])]
    assert await find(since=NOW - 98, until=NOW - 96) == [works[3].id, works[2].id]
    assert await find(id_prefix=works[4].id[:36]) == [works[4].id]
    assert await find(states={WorkState.RUNNING}) == []
    running = (await claim_due(store, limit=1)).records[0]
    assert await find(states={WorkState.RUNNING}) == [running.id]
    assert await find(states={WorkState.RUNNING}, worker="zzz") == []
    assert await find(unique_name="none") == []


async def test_overview_counts_and_buckets(store: Store) -> None:
    done, failed, waiting, later = (
        record("a", at=NOW - 50),
        record("b", at=NOW - 50),
        record("a", at=NOW - 40, tags={"x"}),
        record("a", at=NOW - 40, initial_delay=3600),
    )
    await store.insert([done, failed])
    claimed = {r.id: r for r in (await claim_due(store, now=NOW - 30)).records}
    ok = lifecycle.finish(claimed[done.id], lifecycle.Succeeded(), now=NOW - 20)
    bad = lifecycle.finish(claimed[failed.id], lifecycle.Failed(), now=NOW - 5)
    await store.apply([ok, bad])
    await store.insert([waiting, later])
    ov = await store.overview(now=NOW, since=NOW - 60, bucket=30)
    counts = {(w, s.value): n for w, s, n in ov.counts}
    assert counts == {("a", "SUCCEEDED"): 1, ("b", "FAILED"): 1, ("a", "ENQUEUED"): 2}
    assert {(t, s.value): n for t, s, n in ov.tag_counts} == {
        ("a", "SUCCEEDED"): 1,
        ("b", "FAILED"): 1,
        ("a", "ENQUEUED"): 2,
        ("x", "ENQUEUED"): 1,
    }
    assert [(b.start, b.succeeded, b.failed) for b in ov.buckets] == [
        (NOW - 60, 0, 0),
        (NOW - 30, 1, 1),
    ]
    assert ids(ov.due) == [waiting.id]
    assert ov.due_count == 1
    assert ov.running == []
    assert {w: (n, round(mean, 6)) for w, (n, mean) in ov.run_times.items()} == {
        "a": (1, 10.0),
        "b": (1, 25.0),
    }
    earlier = await store.overview(now=NOW, since=NOW - 10, bucket=10)
    assert {(w, s.value) for w, s, _ in earlier.counts} == {("b", "FAILED"), ("a", "ENQUEUED")}
    with pytest.raises(InvalidRequestError):
        await store.overview(now=NOW, since=NOW, bucket=10)


async def test_edges_touch_the_works_asked_for(store: Store) -> None:
    a, b, c = record(), record(), record()
    await store.insert([a, b, c], {b.id: [a.id], c.id: [b.id]})
    assert sorted(await store.edges([b.id])) == sorted([(a.id, b.id), (b.id, c.id)])
    assert await store.edges([a.id]) == [(a.id, b.id)]
    assert await store.edges([]) == []
