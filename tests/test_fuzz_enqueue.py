"""Random request fields and data through construction and enqueue: every failure is a
WorkManagerError naming the bad field, and a failed enqueue leaves the store unchanged."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wm_async as wm

ALL_STATES = wm.WorkQuery(states=set(wm.WorkState))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text()
)
anything = st.one_of(
    json_scalars,
    st.binary(max_size=8),
    st.sets(st.integers(), max_size=3),
    st.builds(object),
    st.timedeltas(),
    st.lists(json_scalars, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=5), st.integers()), json_scalars, max_size=4),
)
names = st.one_of(
    st.sampled_from(["w", "w'; DROP TABLE wm_work; --", 'w"', "w\x00", "", "x" * 300]),
    st.text(max_size=20),
    anything,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "input": st.one_of(
            anything,
            st.dictionaries(
                st.text(max_size=10),
                st.recursive(json_scalars, lambda c: st.lists(c) | st.dictionaries(st.text(), c)),
                max_size=5,
            ),
        ),
        "initial_delay": st.one_of(anything, st.floats(), st.timedeltas()),
        "timeout": st.one_of(anything, st.floats()),
        "max_attempts": anything,
        "tags": st.one_of(st.lists(names, max_size=3), names),
        "expedited": anything,
        "backoff": st.one_of(
            anything,
            st.builds(lambda p, d: (p, d), st.sampled_from(["LINEAR", "bogus"]), st.floats()),
        ),
        "id": st.one_of(st.uuids(), st.text(max_size=40), anything),
    },
)


def build(worker: object, kwargs: dict[str, Any]) -> wm.OneTimeWorkRequest | None:
    """Construct, returning None when construction rightly refuses."""
    backoff = kwargs.get("backoff")
    if isinstance(backoff, tuple):
        try:
            kwargs["backoff"] = wm.Backoff(backoff[0], backoff[1])
        except wm.WorkManagerError:
            return None
    error: wm.WorkManagerError
    try:
        return wm.OneTimeWorkRequest(worker, **kwargs)  # type: ignore[arg-type]
    except wm.WorkManagerError as exc:  # anything else (TypeError, ...) fails the test
        error = exc
    assert isinstance(error, wm.InvalidRequestError)
    assert error.field  # names the field
    return None


async def enqueue_checked(manager: wm.WorkManager, req: wm.OneTimeWorkRequest) -> None:
    before = await manager.get_work_infos(ALL_STATES)
    anchor = wm.OneTimeWorkRequest("w", initial_delay=3600)
    try:
        await manager.enqueue(anchor, req)
    except wm.WorkManagerError:
        after = await manager.get_work_infos(ALL_STATES)
        assert after == before, "a failed enqueue must store nothing"
    else:
        got = await manager.get_work_info(req.id)
        assert got is not None
        assert got.input == req.input
        assert got.tags == req.tags


def make_manager(url: str) -> wm.WorkManager:
    manager = wm.WorkManager(url, max_data_bytes=512)

    @manager.worker("w")
    async def work(ctx: wm.WorkContext) -> None:
        return None

    return manager


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worker=names, kwargs=fields)
def test_random_requests_memory(worker: object, kwargs: dict[str, Any]) -> None:
    req = build(worker, kwargs)
    if req is None:
        return

    async def run() -> None:
        async with make_manager("memory://") as manager:
            await enqueue_checked(manager, req)

    asyncio.run(run())


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("wm_async.stores.sqlite")
    path: Path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    return f"sqlite:///{path}"


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(worker=names, kwargs=fields)
def test_random_requests_sqlite(sqlite_url: str, worker: object, kwargs: dict[str, Any]) -> None:
    req = build(worker, kwargs)
    if req is None:
        return

    async def run() -> None:
        async with make_manager(sqlite_url) as manager:
            await enqueue_checked(manager, req)
            await manager.cancel_all_work()  # keep the shared file small

    asyncio.run(run())
