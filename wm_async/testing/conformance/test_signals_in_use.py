"""``Store.signals_in_use``: the signal names that unfinished works' constraints need
(the manager evaluates only those)."""

from __future__ import annotations

from ..._core.lifecycle import (
    Succeeded,
    finish,
)
from ..._core.model import (
    Constraints,
    NetworkType,
)
from ...stores import Store
from ._helpers import NOW, record, running


async def test_signals_in_use_are_those_of_unfinished_works(store: Store) -> None:
    assert await store.signals_in_use() == frozenset()
    done = await running(store, record(constraints=Constraints(signals={"gone"})))
    await store.apply([finish(done, Succeeded(), now=NOW)])
    assert await store.signals_in_use() == frozenset()

    await running(store, record(constraints=Constraints(signals={"wifi"})))
    enqueued = record(constraints=Constraints(signals={"vpn", "a,b"}), at=NOW + 100)
    network = record(constraints=Constraints(required_network=NetworkType.CONNECTED), at=NOW + 100)
    blocked = record(constraints=Constraints(signals={"night"}))
    plain = record(at=NOW + 100)
    await store.insert([enqueued, network, blocked, plain], {blocked.id: [enqueued.id]})

    expected = {"wifi", "vpn", "a,b", "night", *network.signal_names}
    assert await store.signals_in_use() == frozenset(expected)
    assert network.signal_names  # the network constraint is a signal too
