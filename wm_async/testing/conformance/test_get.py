"""``Store.get``: the records with the given ids; unknown ids are skipped."""

from __future__ import annotations

import uuid

from ...stores import Store
from ._helpers import record


async def test_get_skips_unknown_ids(store: Store) -> None:
    work = record()
    await store.insert([work])
    assert await store.get([]) == []
    assert await store.get([str(uuid.uuid4())]) == []
    assert await store.get([str(uuid.uuid4()), work.id]) == [work]
