"""``Store.count_works``: how many works each worker has in each state."""

from __future__ import annotations

from ..._core import lifecycle
from ..._core.model import WorkState
from ...stores import Store
from ._helpers import NOW, record, running


async def test_count_works_by_worker_and_state(store: Store) -> None:
    assert await store.count_works() == {}
    run = await running(store, record("c"))
    assert await store.apply([lifecycle.finish(run, lifecycle.Succeeded(), now=NOW)])
    await store.insert([record("a"), record("a"), record("b")])
    assert await store.count_works() == {
        ("a", WorkState.ENQUEUED): 2,
        ("b", WorkState.ENQUEUED): 1,
        ("c", WorkState.SUCCEEDED): 1,
    }
