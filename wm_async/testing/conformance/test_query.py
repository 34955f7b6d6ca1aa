"""``Store.query``: the records matching every given field, oldest enqueue first."""

from __future__ import annotations

import uuid

from ..._core.model import (
    WorkQuery,
    WorkState,
)
from ...stores import Store
from ._helpers import NOW, claim_due, ids, record


async def test_query_combines_fields(store: Store) -> None:
    a = record("w1", tags={"x"}, at=NOW - 4)
    b = record("w2", tags={"x", "y"}, at=NOW - 3)
    c = record("w2", unique_name="u1", at=NOW - 2)
    d = record("w3", unique_name="u2", at=NOW - 1)
    await store.insert([d, c, b, a])
    a_running = (await claim_due(store, limit=1)).records[0]
    assert a_running.id == a.id

    async def q(**fields: object) -> list[str]:
        return ids(await store.query(WorkQuery(**fields)))  # type: ignore[arg-type]

    assert await q(ids={c.id, a.id}) == [a.id, c.id]
    assert await q(tags={"x"}) == [a.id, b.id]
    assert await q(tags={"y", "w1"}) == [a.id, b.id]
    assert await q(tags={"w2"}) == [b.id, c.id]
    assert await q(tags={"x"}, states={WorkState.RUNNING}) == [a.id]
    assert await q(unique_names={"u1"}) == [c.id]
    assert await q(unique_names={"u1", "u2"}, tags={"w3"}) == [d.id]
    assert await q(states={WorkState.ENQUEUED}) == [b.id, c.id, d.id]
    assert await q(states={WorkState.RUNNING}) == [a.id]
    assert await q(states={WorkState.ENQUEUED, WorkState.RUNNING}) == [a.id, b.id, c.id, d.id]
    assert await q(states={WorkState.SUCCEEDED}) == []
    assert await q(ids={a.id}, tags={"y"}) == []
    assert await q(ids={b.id, c.id}, tags={"y"}, states={WorkState.ENQUEUED}) == [b.id]
    assert await q(ids={uuid.uuid4()}) == []
    assert (await store.query(WorkQuery(ids={a.id})))[0] == a_running
