"""Prometheus metrics (wm_async.metrics): transitions, run durations, start lateness,
retries, timeouts and rescues counted from the manager's events; works by worker and
state read from the store when scraped; served by exposition(), an ASGI app and an
aiohttp handler."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import anyio
import pytest

import wm_async as wm
from wm_async.extend import ClaimParams
from wm_async.stores import open_store
from wm_async.testing import VirtualClock

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

from wm_async.metrics import aiohttp_handler, asgi_app, exposition, instrument

MakeManager = Callable[..., wm.WorkManager]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(body: bytes) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_what_the_runs_did(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager(max_concurrency=1)
    instrument(manager)
    release = anyio.Event()

    @manager.worker("flaky")
    async def flaky(ctx: wm.WorkContext) -> wm.Result | None:
        if ctx.run_attempt_count == 0:
            await release.wait()
            return wm.Result.retry()
        return None

    @manager.worker("stuck")
    async def stuck(ctx: wm.WorkContext) -> None:
        await anyio.sleep_forever()

    first = wm.OneTimeWorkRequest("flaky", backoff=wm.Backoff(delay=10))
    second = wm.OneTimeWorkRequest("stuck", timeout=timedelta(seconds=5), max_attempts=1)
    idle = wm.OneTimeWorkRequest("flaky", initial_delay=timedelta(hours=1))
    async with manager:
        await manager.enqueue(first, second, idle)
        await clock.advance(2)  # "stuck" waits 2 s for the only slot
        release.set()
        await clock.advance(0)
        await clock.advance(5)  # "stuck" times out at 7 s
        await clock.advance(5)  # the retry of "flaky" is due at 12 s (2 + the backoff)
        await manager.wait(first.id)
        await manager.wait(second.id)
        body, content_type = await exposition(manager)

    assert content_type.startswith("text/plain")
    samples = _samples(body)
    transitions = "wm_async_transitions_total"
    assert _get(samples, transitions, worker="flaky", state="ENQUEUED") == 3  # 2 + the retry
    assert _get(samples, transitions, worker="flaky", state="RUNNING") == 2
    assert _get(samples, transitions, worker="flaky", state="SUCCEEDED") == 1
    assert _get(samples, transitions, worker="stuck", state="RUNNING") == 1
    assert _get(samples, transitions, worker="stuck", state="FAILED") == 1
    assert _get(samples, "wm_async_retries_total", worker="flaky") == 1
    assert _get(samples, "wm_async_timeouts_total", worker="stuck") == 1
    assert _get(samples, "wm_async_rescues_total", worker="flaky") == 0
    # Durations: the first run of "flaky" 2 s, its second 0 s; "stuck" 5 s.
    duration = "wm_async_run_duration_seconds"
    assert _get(samples, duration + "_count", worker="flaky") == 2
    assert _get(samples, duration + "_sum", worker="flaky") == 2.0
    assert _get(samples, duration + "_bucket", worker="flaky", le="1.0") == 1
    assert _get(samples, duration + "_bucket", worker="flaky", le="2.5") == 2
    assert _get(samples, duration + "_sum", worker="stuck") == 5.0
    # Lateness: "stuck" started 2 s after it was due; the retry of "flaky" at 12 s, 0 s.
    lateness = "wm_async_start_lateness_seconds"
    assert _get(samples, lateness + "_sum", worker="stuck") == 2.0
    assert _get(samples, lateness + "_count", worker="flaky") == 2
    assert _get(samples, lateness + "_sum", worker="flaky") == 0.0
    # The gauges read the store: the idle work is still ENQUEUED.
    assert _get(samples, "wm_async_works", worker="flaky", state="ENQUEUED") == 1
    assert _get(samples, "wm_async_works", worker="flaky", state="SUCCEEDED") == 1
    assert _get(samples, "wm_async_works", worker="stuck", state="FAILED") == 1


async def test_progress_is_not_a_transition_and_every_run_of_a_burst_is_counted(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    # Metrics count the batches of records the manager publishes: a progress report (a
    # RUNNING record published again) is no transition; the works of one big enqueue
    # and their runs are all counted, past the histograms' internal batching.
    manager = make_manager(max_concurrency=500)
    instrument(manager)

    @manager.worker("reports")
    async def reports(ctx: wm.WorkContext) -> None:
        await ctx.set_progress({"half": True})
        await ctx.set_progress({"half": False})

    @manager.worker("quick")
    async def quick(ctx: wm.WorkContext) -> None:
        return None

    reporting = wm.OneTimeWorkRequest("reports")
    burst = [wm.OneTimeWorkRequest("quick") for _ in range(5000)]
    async with manager:
        await manager.enqueue(reporting, *burst)
        await clock.advance(0)
        await manager.wait(reporting.id)
        for request in burst:
            await manager.wait(request.id)
        body, _ = await exposition(manager)

    samples = _samples(body)
    transitions = "wm_async_transitions_total"
    for state in ("ENQUEUED", "RUNNING", "SUCCEEDED"):
        assert _get(samples, transitions, worker="reports", state=state) == 1
        assert _get(samples, transitions, worker="quick", state=state) == 5000
    duration = "wm_async_run_duration_seconds"
    assert _get(samples, duration + "_count", worker="quick") == 5000
    assert _get(samples, duration + "_bucket", worker="quick", le="0.005") == 5000
    assert _get(samples, "wm_async_start_lateness_seconds_count", worker="quick") == 5000


async def test_works_by_state_count_every_process_and_rescues_are_counted(
    store_url: str, clock: VirtualClock
) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store dies with its process: nothing to rescue")
    # An hour ago, a process enqueued two works and died running one of them.
    then = VirtualClock(clock.datetime() - timedelta(hours=1))
    dead = wm.WorkManager(store_url, run_work=False, clock=then)
    async with dead:
        await dead.enqueue(wm.OneTimeWorkRequest("job"), wm.OneTimeWorkRequest("other"))
    async with open_store(store_url) as store:
        claimed = await store.claim_due(
            ClaimParams(now=then.now(), owner="dead-process", limit=1, lease_until=then.now() + 30)
        )
    assert len(claimed.records) == 1
    manager = wm.WorkManager(store_url, clock=clock, shutdown_grace=0)
    instrument(manager)
    gate = anyio.Event()

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        await gate.wait()

    @manager.worker("other")
    async def other(ctx: wm.WorkContext) -> None:
        await gate.wait()

    async with manager:
        await clock.advance(0)
        samples = _samples((await exposition(manager))[0])
        gate.set()
    rescued = claimed.records[0].worker
    waited = ({"job", "other"} - {rescued}).pop()
    assert _get(samples, "wm_async_rescues_total", worker=rescued) == 1
    # Start lateness of works another process enqueued: the one that waited an hour.
    lateness = "wm_async_start_lateness_seconds"
    assert _get(samples, lateness + "_sum", worker=waited) == 3600.0
    assert _get(samples, lateness + "_bucket", worker=waited, le="3600.0") == 1
    assert _get(samples, lateness + "_sum", worker=rescued) == 0.0  # due at its recovery
    assert _get(samples, "wm_async_works", worker="job", state="RUNNING") == 1
    assert _get(samples, "wm_async_works", worker="other", state="RUNNING") == 1


async def test_served_by_asgi_and_aiohttp_and_a_scrape_from_another_thread(
    clock: VirtualClock,
) -> None:
    manager = wm.WorkManager("memory://", clock=clock, shutdown_grace=0)
    registry = prometheus_client.CollectorRegistry()
    metrics = instrument(manager, registry)
    assert instrument(manager) is metrics  # once per manager

    @manager.worker("w")
    async def w(ctx: wm.WorkContext) -> None:
        return None

    async with manager:
        await manager.enqueue(wm.OneTimeWorkRequest("w"), wm.OneTimeWorkRequest("w"))
        await clock.advance(0)

        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/"}
        await asgi_app(manager)(scope, receive, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 200
        body = sent[1]["body"]
        assert isinstance(body, bytes)
        assert _get(_samples(body), "wm_async_works", worker="w", state="SUCCEEDED") == 2

        from aiohttp.test_utils import make_mocked_request

        response = await aiohttp_handler(manager)(make_mocked_request("GET", "/metrics"))
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert b"wm_async_transitions_total" in response.body

        # prometheus_client's own server scrapes from a thread: the gauges are read in
        # the manager's loop.
        await manager.enqueue(wm.OneTimeWorkRequest("w", initial_delay=timedelta(hours=1)))
        scraped: list[bytes] = []
        thread = threading.Thread(
            target=lambda: scraped.append(prometheus_client.generate_latest(registry))
        )
        thread.start()
        await anyio.to_thread.run_sync(thread.join)
    assert _get(_samples(scraped[0]), "wm_async_works", worker="w", state="ENQUEUED") == 1


def test_bad_arguments_raise_at_the_call() -> None:
    with pytest.raises(wm.InvalidRequestError):
        instrument("not a manager")  # type: ignore[arg-type]
    with pytest.raises(wm.InvalidRequestError):
        instrument(wm.WorkManager("memory://"), buckets=(1.0, 0.5))
