"""Rough edges of the public API (issue 19): one name for "runs started" on both sides,
``WorkInfo.to_dict()``, ``Clock.now_datetime()``, ``ctx.input`` readable under mypy
without a cast, and a request signature that shows its defaults."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime, timedelta

import anyio
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock


async def test_runs_started_is_one_number_for_the_worker_and_observers(
    clock: VirtualClock,
) -> None:
    manager = wm.WorkManager(store="memory://", clock=clock, shutdown_grace=0)
    seen: list[tuple[int, int, int]] = []

    @manager.worker("flaky")
    async def flaky(ctx: wm.WorkContext) -> wm.Result:
        info = await manager.get_work_info(ctx.id)
        assert info is not None
        seen.append((ctx.run_attempt_count, ctx.runs_started, info.runs_started))
        return wm.Result.retry() if ctx.runs_started < 3 else wm.Result.success()

    request = wm.OneTimeWorkRequest("flaky", backoff=wm.Backoff(wm.BackoffPolicy.LINEAR, 1))
    async with manager:
        await manager.enqueue(request)
        await clock.advance(timedelta(seconds=10))
        info = await manager.get_work_info(request.id)

    # run_attempt_count on the context: runs before this one (Android's runAttemptCount);
    # runs_started: this one included, the same number observers see during the run.
    assert seen == [(0, 1, 1), (1, 2, 2), (2, 3, 3)]
    assert info is not None
    assert (info.runs_started, info.run_attempt_count) == (3, 3)


async def test_work_info_to_dict_is_json_and_what_show_json_prints(clock: VirtualClock) -> None:
    manager = wm.WorkManager(store="memory://", clock=clock, shutdown_grace=0)

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.success({"n": 1})

    request = wm.OneTimeWorkRequest("w", input={"a": [1, 2]}, tags={"x"}, timeout=90)
    async with manager:
        await manager.enqueue(request)
        await clock.advance(timedelta(0))
        info = await manager.get_work_info(request.id)
    assert info is not None

    form = info.to_dict()
    assert json.loads(json.dumps(form)) == form  # plain JSON, nothing lost on the way
    assert form["id"] == str(request.id)
    assert form["state"] == "SUCCEEDED"
    assert form["tags"] == ["w", "x"]
    assert form["input"] == {"a": [1, 2]}
    assert form["output"] == {"n": 1}
    assert form["run_attempt_count"] == 1
    assert datetime.fromisoformat(form["finished_at"]) == info.finished_at
    assert form["initial_delay"] == 0.0


def test_clock_now_datetime_is_an_aware_utc_datetime(clock: VirtualClock) -> None:
    now = wm.SystemClock().now_datetime()
    assert now.tzinfo is UTC
    assert abs((datetime.now(UTC) - now).total_seconds()) < 5
    assert clock.now_datetime() == datetime.fromtimestamp(clock.now(), UTC)


def test_ctx_input_reads_without_a_cast() -> None:
    # Checked by `mypy --strict tests`: reading a value needs no `# type: ignore`.
    def read(ctx: wm.WorkContext) -> tuple[float, str]:
        seconds = float(ctx.input.get("seconds", 1))
        url: str = ctx.input["url"]
        return seconds, url

    assert callable(read)


@pytest.mark.parametrize("cls", [wm.OneTimeWorkRequest, wm.PeriodicWorkRequest])
def test_request_signature_shows_id_none_and_none_makes_an_id(
    cls: type[wm.OneTimeWorkRequest | wm.PeriodicWorkRequest],
) -> None:
    parameter = inspect.signature(cls).parameters["id"]
    assert parameter.default is None
    assert "object at" not in str(inspect.signature(cls))
    kwargs: dict[str, object] = {"repeat_interval": 60} if cls is wm.PeriodicWorkRequest else {}
    one, two = cls("w", id=None, **kwargs), cls("w", **kwargs)  # type: ignore[arg-type]
    assert one.id.version == 7
    assert one.id != two.id
    with pytest.raises(wm.InvalidRequestError):
        cls("w", id="nope", **kwargs)  # type: ignore[arg-type]


async def test_a_running_time_compares_with_now_datetime(clock: VirtualClock) -> None:
    manager = wm.WorkManager(store="memory://", clock=clock, shutdown_grace=0)
    started = anyio.Event()

    @manager.worker("slow")
    async def slow(ctx: wm.WorkContext) -> None:
        started.set()
        await anyio.sleep_forever()

    request = wm.OneTimeWorkRequest("slow")
    async with manager:
        await manager.enqueue(request)
        await clock.advance(timedelta(0))
        await started.wait()
        await clock.advance(timedelta(seconds=5))
        info = await manager.get_work_info(request.id)
        assert info is not None
        assert info.started_at is not None
        assert clock.now_datetime() - info.started_at == timedelta(seconds=5)
        await manager.cancel_work_by_id(request.id)
