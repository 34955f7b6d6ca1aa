"""OpenTelemetry tracing (wm_async.tracing): a span per run with the work's id, worker,
attempt, tags and outcome, continuing the trace context active at enqueue, also in
another process (PostgreSQL, and a SQLite file shared by a producer and a worker)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async.testing import VirtualClock

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from wm_async.tracing import instrument

MakeManager = Callable[..., wm.WorkManager]


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _runs(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("wm_async.run ")]


async def test_a_run_continues_the_trace_of_its_enqueue(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("app")
    manager = make_manager()
    instrument(manager, tracer_provider=provider)

    @manager.worker("traced")
    async def traced(ctx: wm.WorkContext) -> wm.Result:
        with tracer.start_as_current_span("inside the worker"):
            pass
        return wm.Result.success()

    request = wm.OneTimeWorkRequest("traced", tags={"t1"})
    async with manager:
        with tracer.start_as_current_span("http request") as enqueuing:
            await manager.enqueue(request)
        untraced = wm.OneTimeWorkRequest("traced")  # enqueued outside any span
        await manager.enqueue(untraced)
        await clock.advance(0)
        await manager.wait(request.id)
        await manager.wait(untraced.id)

    runs = {s.attributes["wm_async.work.id"]: s for s in _runs(exporter)}  # type: ignore[index]
    run = runs[str(request.id)]
    parent = enqueuing.get_span_context()
    assert run.name == "wm_async.run traced"
    assert run.kind is SpanKind.CONSUMER
    assert run.context is not None
    assert run.context.trace_id == parent.trace_id
    assert run.parent is not None
    assert run.parent.span_id == parent.span_id
    assert dict(run.attributes or {}) == {
        "wm_async.work.id": str(request.id),
        "wm_async.worker": "traced",
        "wm_async.attempt": 1,
        "wm_async.tags": ("t1", "traced"),
        "wm_async.outcome": "success",
    }
    [inner] = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "inside the worker" and s.context and s.context.trace_id == parent.trace_id
    ]
    assert inner.parent is not None
    assert inner.parent.span_id == run.context.span_id
    # Enqueued outside a span: its run starts a trace of its own.
    alone = runs[str(untraced.id)]
    assert alone.parent is None
    assert alone.context is not None
    assert alone.context.trace_id != parent.trace_id


async def test_outcomes_failures_and_retries(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    provider, exporter = _provider()
    manager = make_manager()
    instrument(manager, tracer_provider=provider)

    @manager.worker("flaky")
    async def flaky(ctx: wm.WorkContext) -> wm.Result | None:
        if ctx.run_attempt_count == 0:
            return wm.Result.retry()
        if ctx.run_attempt_count == 1:
            raise ValueError("no luck")
        return None

    @manager.worker("refuses")
    async def refuses(ctx: wm.WorkContext) -> wm.Result:
        return wm.Result.failure({"why": "no"})

    @manager.worker("stuck")
    async def stuck(ctx: wm.WorkContext) -> None:
        await anyio.sleep_forever()

    flaky_request = wm.OneTimeWorkRequest("flaky", backoff=wm.Backoff(delay=1))
    refused = wm.OneTimeWorkRequest("refuses")
    stopped = wm.OneTimeWorkRequest("stuck")
    async with manager:
        await manager.enqueue(flaky_request, refused, stopped)
        await clock.advance(0)
        await manager.cancel_work_by_id(stopped.id)
        await manager.wait(refused.id)
        await manager.wait(stopped.id)
        await clock.advance(1)  # the second run raises: FAILED

    by_work: dict[str, list[ReadableSpan]] = {}
    for span in _runs(exporter):
        by_work.setdefault(str((span.attributes or {})["wm_async.work.id"]), []).append(span)
    first, second = sorted(by_work[str(flaky_request.id)], key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["wm_async.outcome"] == "retry"
    assert (second.attributes or {})["wm_async.attempt"] == 2
    assert (second.attributes or {})["wm_async.outcome"] == "exception"
    assert second.status.status_code is StatusCode.ERROR
    assert [e.name for e in second.events] == ["exception"]
    assert (second.events[0].attributes or {})["exception.type"] == "ValueError"
    [refusal] = by_work[str(refused.id)]
    assert (refusal.attributes or {})["wm_async.outcome"] == "failure"
    assert refusal.status.status_code is StatusCode.ERROR
    [stop] = by_work[str(stopped.id)]
    assert (stop.attributes or {})["wm_async.outcome"] == "stopped"
    assert (stop.attributes or {})["wm_async.stop_reason"] == "CANCELLED_BY_APP"


async def test_an_exception_retry_on_retries_is_a_retry_not_an_error(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    provider, exporter = _provider()
    manager = make_manager()
    instrument(manager, tracer_provider=provider)

    @manager.worker("flaky", retry_on=ConnectionError)
    async def flaky(ctx: wm.WorkContext) -> None:
        if ctx.run_attempt_count == 0:
            raise ConnectionError("down")

    request = wm.OneTimeWorkRequest("flaky", backoff=wm.Backoff(delay=1))
    async with manager:
        await manager.enqueue(request)
        await clock.advance(0)
        await clock.advance(1)
        info = await manager.wait(request.id)
    assert info.state is wm.WorkState.SUCCEEDED
    first, second = sorted(_runs(exporter), key=lambda s: s.start_time or 0)
    assert (first.attributes or {})["wm_async.outcome"] == "retry"
    assert first.status.status_code is StatusCode.UNSET
    assert [e.name for e in first.events] == ["exception"]  # still recorded
    assert (second.attributes or {})["wm_async.outcome"] == "success"


async def test_a_no_op_provider_still_carries_the_enqueue_context_to_the_run(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    manager = make_manager()
    instrument(manager, tracer_provider=trace.NoOpTracerProvider())
    seen: list[object] = []

    @manager.worker("job")
    async def job(ctx: wm.WorkContext) -> None:
        seen.append(baggage.get_baggage("tenant"))
        seen.append(trace.get_current_span().get_span_context().is_valid)

    with_baggage = wm.OneTimeWorkRequest("job")
    without = wm.OneTimeWorkRequest("job")
    async with manager:
        token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            await manager.enqueue(with_baggage)
        finally:
            otel_context.detach(token)
        await clock.advance(0)
        await manager.wait(with_baggage.id)
        await manager.enqueue(without)
        await clock.advance(0)
        await manager.wait(without.id)
    assert seen == ["acme", False, None, False]


PRODUCER = textwrap.dedent(
    """
    import sys
    import anyio
    from opentelemetry.sdk.trace import TracerProvider
    import wm_async as wm
    from wm_async.tracing import instrument

    async def main() -> None:
        provider = TracerProvider()
        manager = wm.WorkManager(sys.argv[1], run_work=False)
        instrument(manager, tracer_provider=provider)
        async with manager:
            with provider.get_tracer("producer").start_as_current_span("request") as span:
                request = wm.OneTimeWorkRequest("traced")
                await manager.enqueue(request)
        context = span.get_span_context()
        print(request.id, format(context.trace_id, "032x"), format(context.span_id, "016x"))

    anyio.run(main)
    """
)


async def test_the_trace_continues_in_another_process(
    store_url: str, make_manager: MakeManager, clock: VirtualClock
) -> None:
    if store_url == "memory://":
        pytest.skip("a memory store is not shared between processes")
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-c", PRODUCER, store_url],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    )
    assert done.returncode == 0, done.stderr
    work_id, trace_id, span_id = done.stdout.split()
    provider, exporter = _provider()
    worker = make_manager()
    instrument(worker, tracer_provider=provider)
    seen: list[trace.Span] = []

    @worker.worker("traced")
    async def traced(ctx: wm.WorkContext) -> None:
        seen.append(trace.get_current_span())

    async with worker:
        await clock.advance(0)
        info = await worker.wait(work_id)
    assert info.state is wm.WorkState.SUCCEEDED
    [run] = _runs(exporter)
    assert run.context is not None
    assert format(run.context.trace_id, "032x") == trace_id
    assert run.parent is not None
    assert run.parent.is_remote
    assert format(run.parent.span_id, "016x") == span_id
    assert seen[0].get_span_context().span_id == run.context.span_id


def test_a_sync_client_carries_the_calling_thread_s_trace(tmp_path: Path) -> None:
    from opentelemetry import propagate

    url = f"sqlite:///{tmp_path}/wm.db"
    provider, exporter = _provider()
    with wm.SyncClient(url) as client:
        client.add_propagator(propagate.inject)
        with provider.get_tracer("view").start_as_current_span("request") as span:
            request = wm.OneTimeWorkRequest("traced")
            client.enqueue(request)

    async def run_it() -> wm.WorkInfo:
        worker = wm.WorkManager(url, shutdown_grace=0)
        instrument(worker, tracer_provider=provider)

        @worker.worker("traced")
        async def traced(ctx: wm.WorkContext) -> None:
            return None

        async with worker:
            return await worker.wait(request.id, timeout=30)

    assert anyio.run(run_it).state is wm.WorkState.SUCCEEDED
    [run] = _runs(exporter)
    assert run.parent is not None
    assert run.parent.span_id == span.get_span_context().span_id
    assert run.context is not None
    assert run.context.trace_id == span.get_span_context().trace_id
    with pytest.raises(wm.InvalidRequestError):
        client.add_propagator(42)  # type: ignore[arg-type]
