"""OpenTelemetry tracing for a :class:`~wm_async.WorkManager`, built on its propagators
and middleware.

::

    from wm_async.tracing import instrument

    manager = wm.WorkManager(store="postgresql://…")
    instrument(manager)  # the global tracer provider and propagator

Every run gets a span, ``wm_async.run <worker>`` (kind CONSUMER), with the work's id,
worker, attempt, tags and outcome as attributes; the worker's own spans are its
children. The trace context active when the work was enqueued (the current span of the
request handler that called ``enqueue``, say) is stored with the work, as W3C
``traceparent``/``tracestate`` headers by default (whatever the global propagator
writes), and the run's span continues it: its parent is the enqueuing span, in
whichever process the work runs (PostgreSQL, or a SQLite file shared by a producer and
a worker process). Both processes call :func:`instrument`.

Attributes: ``wm_async.work.id``, ``wm_async.worker``, ``wm_async.attempt`` (1 on the
first run), ``wm_async.tags`` (sorted), ``wm_async.outcome`` (``success``, ``failure``,
``retry``, ``exception``, ``stopped``) and, for a stopped run, ``wm_async.stop_reason``.
A run whose worker raised records the exception and has the status ERROR (unless the
worker's ``retry_on`` makes it a retry: outcome ``retry``, status unset); so does a
``Result.failure()``. With a tracer provider that records nothing
(``NoOpTracerProvider``), a run without stored headers costs one check.

This module needs opentelemetry-api (``pip install 'wm_async[tracing]'``), imported
when :func:`instrument` is called, not when this module is.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ._api.manager import WorkManager
from ._core.errors import InvalidRequestError
from ._core.model import Result, ResultKind
from ._runtime.executor import retried_on

if TYPE_CHECKING:
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import TracerProvider

    from ._core.event import CallNext
    from ._runtime.executor import WorkContext

__all__ = ("instrument",)

_OUTCOMES = {
    ResultKind.SUCCESS: "success",
    ResultKind.FAILURE: "failure",
    ResultKind.RETRY: "retry",
}


def instrument(
    manager: WorkManager,
    *,
    tracer_provider: TracerProvider | None = None,
    propagator: TextMapPropagator | None = None,
) -> None:
    """Trace ``manager``'s runs, and store the enqueuing trace context with each work.

    :param tracer_provider: where the spans go (default: the global one)
    :param propagator: how the trace context is written into a work's headers and read
        back (default: the global one, W3C trace context unless configured otherwise)
    :raises InvalidRequestError: if ``manager`` is not a WorkManager
    """
    if not isinstance(manager, WorkManager):
        raise InvalidRequestError("manager", manager, "expected a WorkManager")
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError(
            f"wm_async.tracing needs opentelemetry-api: pip install 'wm_async[tracing]' ({exc})"
        ) from exc

    tracer = trace.get_tracer("wm_async", tracer_provider=tracer_provider)
    inject = propagate.inject if propagator is None else propagator.inject
    extract = propagate.extract if propagator is None else propagator.extract
    set_span_in_context = trace.set_span_in_context
    attach, detach = otel_context.attach, otel_context.detach
    get_current = otel_context.get_current
    span_key = _span_key(trace)
    consumer = SpanKind.CONSUMER
    # A tracer known to record nothing, ever (NoOpTracerProvider's): a run then only
    # makes the trace context of its headers (baggage) current, as a recording one
    # would; with no headers and no span current, there is nothing to do.
    no_op = isinstance(tracer, trace.NoOpTracer)
    # asyncio's (the manager runs on asyncio): known without a running loop, so that
    # instrument() may be called where the manager is made, at import time.
    cancelled = asyncio.CancelledError

    def propagate_context(carrier: dict[str, str]) -> None:
        inject(carrier)

    async def trace_run(ctx: WorkContext, call_next: CallNext) -> Result | None:
        headers = ctx.headers
        if no_op and not headers and get_current().get(span_key) is None:
            return await call_next()  # (what the span would make current is this)
        parent = extract(headers) if headers else None
        # start_span and attach rather than start_as_current_span: a generator-based
        # context manager costs as much as the rest of a trivial run. The attributes are
        # set once the span is known to record (a span sampled out, or a no-op tracer,
        # skips building them; samplers do not see them).
        span = tracer.start_span("wm_async.run " + ctx.worker, context=parent, kind=consumer)
        recording = span.is_recording()
        if recording:
            span.set_attributes(
                {
                    "wm_async.work.id": str(ctx.id),
                    "wm_async.worker": ctx.worker,
                    "wm_async.attempt": ctx.run_attempt_count + 1,
                    "wm_async.tags": sorted(ctx.tags),
                }
            )
        token = attach(set_span_in_context(span, parent))
        try:
            result = await call_next()
        except cancelled:
            if recording:
                span.set_attribute("wm_async.outcome", "stopped")
                span.set_attribute("wm_async.stop_reason", ctx.stop_reason.value)
            raise
        except BaseException as exc:
            if recording:
                span.record_exception(exc)
                if retried_on(ctx, exc):  # the worker's retry_on: a retry, not an error
                    span.set_attribute("wm_async.outcome", "retry")
                else:
                    span.set_attribute("wm_async.outcome", "exception")
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        else:
            if recording:
                _outcome(span, result, Status, StatusCode)
            return result
        finally:
            detach(token)
            span.end()

    manager.add_propagator(propagate_context)
    manager.add_middleware(trace_run)


def _span_key(trace: Any) -> str:
    """The context key the current span is stored under (what ``get_current_span``
    reads)."""
    from opentelemetry.context import Context

    key: str = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
    return key


def _outcome(span: Any, result: object, status: Any, code: Any) -> None:
    kind = result.kind if isinstance(result, Result) else ResultKind.SUCCESS
    span.set_attribute("wm_async.outcome", _OUTCOMES[kind])
    if kind is ResultKind.FAILURE:
        span.set_status(status(code.ERROR, "Result.failure()"))
