"""``Store.prune``: finished works that ended before the given time are deleted, with
their tags; unfinished and recent works stay."""

from __future__ import annotations

from ..._core.lifecycle import (
    Failed,
    Succeeded,
    cancel,
    finish,
)
from ..._core.model import WorkQuery
from ...stores import Store
from ._helpers import NOW, ids, record, running


async def test_prune_deletes_old_finished_works_only(store: Store) -> None:
    old = await running(store, record("old", tags={"gone"}, at=NOW - 100), now=NOW)
    old_done = finish(old, Succeeded(), now=NOW)
    cancelled = cancel(record("c", at=NOW + 500), now=NOW + 1)
    assert cancelled is not None
    await store.insert([cancelled.before])
    recent = await running(store, record("recent", at=NOW - 50), now=NOW)
    recent_done = finish(recent, Failed(), now=NOW + 100)
    unfinished = record("enqueued", at=NOW + 1000)
    await store.insert([unfinished])
    assert len(await store.apply([old_done, cancelled, recent_done])) == 3

    assert await store.prune(finished_before=NOW + 50) == 2
    assert await store.prune(finished_before=NOW + 50) == 0

    remaining = [recent.id, unfinished.id]
    assert sorted(ids(await store.get([old.id, cancelled.before.id, *remaining]))) == sorted(
        remaining
    )
    assert await store.query(WorkQuery(tags={"gone"})) == []
    await store.insert([old])  # the id and its tags are free again
    assert ids(await store.query(WorkQuery(tags={"gone"}))) == [old.id]
