"""The work state machine, pure and table-driven.

Each table row is (starting record, event) → expected record. Every check also asserts
that nothing outside the runtime fields changed, and that each Change carries the record
it was computed from (the compare-and-set guard stores apply).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import attrs
import pytest

import wm_async as wm
from wm_async._core import lifecycle as lc
from wm_async._core.data import Data
from wm_async._core.record import (
    RUNTIME_FIELDS,
    WorkRecord,
)

ENQUEUED_AT: Final = 1000.0
STARTED_AT: Final = 1500.0
NOW: Final = 2000.0  # when the event under test happens
OWNER: Final = "process-1"
PROGRESS: Final[Data] = {"pct": 50}
EMPTY: Final[Data] = {}
MAX_ATTEMPTS_ERROR: Final = "wm_async.MaxAttemptsReached"

S = wm.WorkState
R = wm.StopReason

CONSTRAINT_REASONS: Final = [r for r in R if r.name.startswith("CONSTRAINT_")]
INTERRUPT_REASONS: Final = [R.TIMEOUT, R.SHUTDOWN, R.UNKNOWN, *CONSTRAINT_REASONS]


def enqueued(**request: Any) -> WorkRecord:
    """A new record, as enqueued at ENQUEUED_AT."""
    return WorkRecord.from_request(wm.OneTimeWorkRequest("w", **request), now=ENQUEUED_AT)


def running(attempts: int = 1, **request: Any) -> WorkRecord:
    """A record in its ``attempts``-th run (claimed at STARTED_AT), with progress set."""
    before = attrs.evolve(enqueued(**request), run_attempt_count=attempts - 1)
    record = lc.claim(before, now=STARTED_AT, owner=OWNER)
    change = lc.set_progress(record, PROGRESS)
    assert change is not None
    return change.after


def blocked() -> WorkRecord:
    return attrs.evolve(enqueued(), state=S.BLOCKED, next_run_at=None)


def finished(outcome: lc.Outcome) -> WorkRecord:
    return lc.finish(running(), outcome, now=STARTED_AT + 1).after


def cancelled() -> WorkRecord:
    change = lc.cancel(enqueued(), now=STARTED_AT + 1)
    assert change is not None
    return change.after


def assert_only_runtime_changed(before: WorkRecord, after: WorkRecord) -> None:
    """The work's spec (id, worker, input, backoff, …) is never touched by a transition."""
    restored = attrs.evolve(after, **{f: getattr(before, f) for f in RUNTIME_FIELDS})
    assert restored == before


# -- from_request, the starting point of every table


def test_from_request_is_enqueued_and_due_after_the_initial_delay() -> None:
    req = wm.OneTimeWorkRequest("w", input={"a": 1}, initial_delay=60, timeout=5)
    rec = WorkRecord.from_request(req, now=ENQUEUED_AT)
    assert rec.id == str(req.id)
    assert rec.state is S.ENQUEUED
    assert rec.run_attempt_count == 0
    assert rec.next_run_at == ENQUEUED_AT + 60
    assert rec.enqueued_at == rec.last_enqueue_time == ENQUEUED_AT
    assert (rec.started_at, rec.finished_at, rec.error, rec.owner) == (None, None, None, None)
    assert rec.stop_reason is R.NOT_STOPPED
    assert (rec.input, rec.output, rec.progress) == ({"a": 1}, {}, {})
    assert (rec.initial_delay, rec.timeout) == (60.0, 5.0)


# -- claim


@pytest.mark.parametrize("attempts_before", [0, 1, 4])
@pytest.mark.parametrize("owner", [None, OWNER])
def test_claim(attempts_before: int, owner: str | None) -> None:
    before = attrs.evolve(enqueued(), run_attempt_count=attempts_before)
    after = lc.claim(before, now=NOW, owner=owner)
    assert after.state is S.RUNNING
    assert after.run_attempt_count == attempts_before + 1  # counted in the same write
    assert after.next_run_at == before.next_run_at  # the due time it was claimed at
    assert after.started_at == NOW
    assert after.owner == owner
    assert after.progress == {}
    assert after.stop_reason is R.NOT_STOPPED
    assert after.finished_at is None
    assert_only_runtime_changed(before, after)


def test_claim_clears_stale_progress() -> None:
    before = attrs.evolve(enqueued(), progress={"pct": 90})
    assert lc.claim(before, now=NOW, owner=None).progress == {}


def test_claim_resets_the_stop_reason_of_an_earlier_run() -> None:
    """BUG: ``claim`` keeps the previous run's stop reason. A work that timed out once
    and then runs again shows ``stop_reason=TIMEOUT`` while RUNNING (WorkManager's
    ``trySetRunning`` sets STOP_REASON_NOT_STOPPED in the same transaction)."""
    timed_out = lc.finish(running(), lc.Interrupted(R.TIMEOUT), now=STARTED_AT + 1).after
    assert timed_out.stop_reason is R.TIMEOUT
    assert lc.claim(timed_out, now=NOW, owner=OWNER).stop_reason is R.NOT_STOPPED


# -- finish


@attrs.frozen
class Expect:
    """The runtime fields a finished run should leave (relative ones are derived)."""

    state: wm.WorkState
    next_run_at: float | None = None
    stop_reason: wm.StopReason = R.NOT_STOPPED
    output: Data = EMPTY
    error: wm.WorkError | None = None


BOOM: Final = wm.WorkError(type="ValueError", message="boom")
EXP_10: Final = wm.Backoff(wm.BackoffPolicy.EXPONENTIAL, 10)
LINEAR_10: Final = wm.Backoff(wm.BackoffPolicy.LINEAR, 10)
CAPPED: Final = wm.Backoff(wm.BackoffPolicy.EXPONENTIAL, 60, max_delay=100)

FINISH_TABLE: Final[list[Any]] = [
    # id, attempts, request fields, outcome, expected
    ("success", 1, {}, lc.Succeeded(), Expect(S.SUCCEEDED)),
    ("success-output", 1, {}, lc.Succeeded({"n": 3}), Expect(S.SUCCEEDED, output={"n": 3})),
    ("failure", 1, {}, lc.Failed(), Expect(S.FAILED)),
    ("failure-output", 2, {}, lc.Failed({"why": "x"}), Expect(S.FAILED, output={"why": "x"})),
    ("failure-error", 1, {}, lc.Failed(error=BOOM), Expect(S.FAILED, error=BOOM)),
    (
        "failure-output-error",
        1,
        {},
        lc.Failed({"why": "x"}, BOOM),
        Expect(S.FAILED, output={"why": "x"}, error=BOOM),
    ),
    # Retry: ENQUEUED after the backoff; n = run_attempt_count after the failed run
    ("retry-default-1", 1, {}, lc.Retry(), Expect(S.ENQUEUED, NOW + 30)),
    ("retry-default-2", 2, {}, lc.Retry(), Expect(S.ENQUEUED, NOW + 60)),
    ("retry-exp-1", 1, {"backoff": EXP_10}, lc.Retry(), Expect(S.ENQUEUED, NOW + 10)),
    ("retry-exp-4", 4, {"backoff": EXP_10}, lc.Retry(), Expect(S.ENQUEUED, NOW + 80)),
    ("retry-linear-1", 1, {"backoff": LINEAR_10}, lc.Retry(), Expect(S.ENQUEUED, NOW + 10)),
    ("retry-linear-4", 4, {"backoff": LINEAR_10}, lc.Retry(), Expect(S.ENQUEUED, NOW + 40)),
    ("retry-capped-1", 1, {"backoff": CAPPED}, lc.Retry(), Expect(S.ENQUEUED, NOW + 60)),
    ("retry-capped-2", 2, {"backoff": CAPPED}, lc.Retry(), Expect(S.ENQUEUED, NOW + 100)),
    ("retry-capped-30", 30, {"backoff": CAPPED}, lc.Retry(), Expect(S.ENQUEUED, NOW + 100)),
    (
        "retry-zero-delay",
        3,
        {"backoff": wm.Backoff(delay=0)},
        lc.Retry(),
        Expect(S.ENQUEUED, NOW),
    ),
    # Interrupted: back to ENQUEUED at once; the attempt counts, no backoff (12-15)
    *[
        (f"interrupted-{r.name}", 2, {}, lc.Interrupted(r), Expect(S.ENQUEUED, NOW, r))
        for r in INTERRUPT_REASONS
    ],
    # max_attempts=3: below it, retries and interruptions re-enqueue ...
    ("max-retry-below", 2, {"max_attempts": 3}, lc.Retry(), Expect(S.ENQUEUED, NOW + 60)),
    *[
        (
            f"max-interrupted-below-{r.name}",
            2,
            {"max_attempts": 3},
            lc.Interrupted(r),
            Expect(S.ENQUEUED, NOW, r),
        )
        for r in INTERRUPT_REASONS
    ],
    # ... and a result is recorded as usual once it is reached
    (
        "max-success-at",
        3,
        {"max_attempts": 3},
        lc.Succeeded({"n": 1}),
        Expect(S.SUCCEEDED, output={"n": 1}),
    ),
    (
        "max-failure-at",
        3,
        {"max_attempts": 3},
        lc.Failed(error=BOOM),
        Expect(S.FAILED, error=BOOM),
    ),
]


@pytest.mark.parametrize(
    ("attempts", "request_fields", "outcome", "expected"),
    [row[1:] for row in FINISH_TABLE],
    ids=[row[0] for row in FINISH_TABLE],
)
def test_finish(
    attempts: int, request_fields: dict[str, Any], outcome: lc.Outcome, expected: Expect
) -> None:
    before = running(attempts, **request_fields)
    change = lc.finish(before, outcome, now=NOW)
    after = change.after
    assert change.before is before
    assert after.state is expected.state
    assert after.next_run_at == expected.next_run_at
    assert after.run_attempt_count == attempts  # counted at claim, never again here
    assert after.stop_reason is expected.stop_reason
    assert after.output == expected.output
    assert after.error == expected.error
    assert after.progress == {}  # progress is visible only while RUNNING
    assert after.owner is None
    assert after.started_at == STARTED_AT
    if expected.state.is_finished:
        assert after.finished_at == NOW
        assert after.last_enqueue_time == before.last_enqueue_time
    else:
        assert after.finished_at is None
        assert after.last_enqueue_time == NOW
    assert_only_runtime_changed(before, after)


MAX_TABLE: Final[list[Any]] = [
    # id, max_attempts, attempts, outcome, expected stop reason
    ("retry-at-max", 3, 3, lc.Retry(), R.NOT_STOPPED),
    ("retry-past-max", 3, 5, lc.Retry(), R.NOT_STOPPED),  # e.g. max lowered by update_work
    ("retry-max-1", 1, 1, lc.Retry(), R.NOT_STOPPED),
    *[(f"interrupted-at-max-{r.name}", 3, 3, lc.Interrupted(r), r) for r in INTERRUPT_REASONS],
    ("interrupted-max-1", 1, 1, lc.Interrupted(R.TIMEOUT), R.TIMEOUT),
]


@pytest.mark.parametrize(
    ("max_attempts", "attempts", "outcome", "stop_reason"),
    [row[1:] for row in MAX_TABLE],
    ids=[row[0] for row in MAX_TABLE],
)
def test_retry_or_interruption_at_max_attempts_fails_the_work(
    max_attempts: int, attempts: int, outcome: lc.Outcome, stop_reason: wm.StopReason
) -> None:
    before = running(attempts, max_attempts=max_attempts)
    after = lc.finish(before, outcome, now=NOW).after
    assert after.state is S.FAILED
    assert after.next_run_at is None
    assert after.finished_at == NOW
    assert after.run_attempt_count == attempts
    assert after.stop_reason is stop_reason
    assert after.output == {}
    assert after.progress == {}
    assert after.owner is None
    assert after.error is not None
    assert after.error.type == MAX_ATTEMPTS_ERROR
    assert f"max_attempts={max_attempts}" in after.error.message
    assert_only_runtime_changed(before, after)


def test_max_attempts_error_type_is_the_documented_constant() -> None:
    assert lc.MAX_ATTEMPTS_ERROR == MAX_ATTEMPTS_ERROR


@pytest.mark.parametrize(
    "outcome",
    [lc.Succeeded(), lc.Failed(), lc.Retry()],
    ids=["success", "failure", "retry"],
)
def test_a_run_that_returns_after_an_interrupted_one_reports_not_stopped(
    outcome: lc.Outcome,
) -> None:
    """BUG (with claim keeping the stop reason, and Retry re-using it): run 1 times out,
    run 2 returns a result, and the work still reports ``stop_reason=TIMEOUT``. The
    StopReason docs say it describes the *last* run, and WorkManager reschedules a retry
    with STOP_REASON_NOT_STOPPED."""
    timed_out = lc.finish(running(), lc.Interrupted(R.TIMEOUT), now=STARTED_AT + 1).after
    second_run = lc.claim(timed_out, now=NOW, owner=OWNER)
    after = lc.finish(second_run, outcome, now=NOW + 1).after
    assert after.stop_reason is R.NOT_STOPPED


def test_retry_backoff_grows_over_a_sequence_of_runs() -> None:
    """Claim and retry five times: EXPONENTIAL 10 s gives 10, 20, 40, 80, 160 s."""
    record = enqueued(backoff=EXP_10)
    now = ENQUEUED_AT
    delays = []
    for _ in range(5):
        record = lc.claim(record, now=now, owner=OWNER)
        record = lc.finish(record, lc.Retry(), now=now).after
        assert record.next_run_at is not None
        delays.append(record.next_run_at - now)
        now = record.next_run_at
    assert delays == [10, 20, 40, 80, 160]
    assert record.run_attempt_count == 5


# -- cancel

CANCEL_TABLE: Final[list[Any]] = [
    # id, starting record, expected stop reason
    ("enqueued", enqueued, R.NOT_STOPPED),
    ("enqueued-delayed", lambda: enqueued(initial_delay=3600), R.NOT_STOPPED),
    ("blocked", blocked, R.NOT_STOPPED),
    ("running", running, R.CANCELLED_BY_APP),
    ("running-3rd", lambda: running(3), R.CANCELLED_BY_APP),
]


@pytest.mark.parametrize(
    ("make", "stop_reason"),
    [row[1:] for row in CANCEL_TABLE],
    ids=[row[0] for row in CANCEL_TABLE],
)
def test_cancel_unfinished(make: Callable[[], WorkRecord], stop_reason: wm.StopReason) -> None:
    before = make()
    change = lc.cancel(before, now=NOW)
    assert change is not None
    assert change.before is before
    after = change.after
    assert after.state is S.CANCELLED
    assert after.stop_reason is stop_reason
    assert after.finished_at == NOW
    assert after.next_run_at is None
    assert after.run_attempt_count == before.run_attempt_count
    assert after.progress == {}
    assert after.output == {}
    assert after.owner is None
    assert_only_runtime_changed(before, after)


@pytest.mark.parametrize(
    "make",
    [
        lambda: finished(lc.Succeeded({"n": 1})),
        lambda: finished(lc.Failed(error=BOOM)),
        cancelled,
    ],
    ids=["succeeded", "failed", "cancelled"],
)
def test_cancel_finished_is_a_no_op(make: Callable[[], WorkRecord]) -> None:
    record = make()
    assert record.state.is_finished
    assert lc.cancel(record, now=NOW) is None


# -- recover


def test_recover_reenqueues_with_unknown_and_counts_the_attempt() -> None:
    before = running(2)
    change = lc.recover(before, now=NOW)
    assert change.before is before
    after = change.after
    assert after.state is S.ENQUEUED
    assert after.next_run_at == NOW  # no backoff: it runs again at once
    assert after.last_enqueue_time == NOW
    assert after.run_attempt_count == 2
    assert after.stop_reason is R.UNKNOWN
    assert after.progress == {}
    assert after.owner is None
    assert after.finished_at is None
    assert_only_runtime_changed(before, after)


def test_recover_at_max_attempts_fails_the_work() -> None:
    after = lc.recover(running(2, max_attempts=2), now=NOW).after
    assert after.state is S.FAILED
    assert after.stop_reason is R.UNKNOWN
    assert after.finished_at == NOW
    assert after.error is not None
    assert after.error.type == MAX_ATTEMPTS_ERROR


# -- a run stopped before its worker was called


@pytest.mark.parametrize("reason", [R.SHUTDOWN, R.TIMEOUT, R.UNKNOWN, *CONSTRAINT_REASONS])
@pytest.mark.parametrize("max_attempts", [None, 1])
def test_unstarted_undoes_the_claim_without_spending_the_attempt(
    reason: wm.StopReason, max_attempts: int | None
) -> None:
    """Nothing ran, so the attempt is given back: even a max_attempts=1 work goes back to
    ENQUEUED (due now) instead of FAILED, and the reason says why it was stopped."""
    before = running(1, max_attempts=max_attempts)
    change = lc.finish(before, lc.Unstarted(reason), now=NOW)
    assert change.before is before
    after = change.after
    assert after.state is S.ENQUEUED
    assert after.run_attempt_count == 0
    assert after.next_run_at == NOW
    assert after.stop_reason is reason
    assert after.progress == {}
    assert after.owner is None
    assert after.finished_at is None
    assert after.error is None
    assert_only_runtime_changed(before, after)


# -- delay_met


def test_delay_met_makes_a_delayed_work_due_now() -> None:
    before = enqueued(initial_delay=3600)
    change = lc.delay_met(before, now=NOW)
    assert change is not None
    assert change.before is before
    assert change.after == attrs.evolve(before, next_run_at=NOW)


def test_delay_met_on_a_backed_off_retry() -> None:
    before = lc.finish(running(), lc.Retry(), now=NOW).after
    assert before.next_run_at == NOW + 30
    change = lc.delay_met(before, now=NOW + 1)
    assert change is not None
    assert change.after == attrs.evolve(before, next_run_at=NOW + 1)


@pytest.mark.parametrize(
    ("make", "now"),
    [
        (lambda: enqueued(initial_delay=60), ENQUEUED_AT + 60),  # due exactly now
        (enqueued, NOW),  # due since enqueue
        (running, NOW),
        (blocked, NOW),
        (lambda: finished(lc.Succeeded()), NOW),
        (cancelled, NOW),
    ],
    ids=["due-now", "overdue", "running", "blocked", "succeeded", "cancelled"],
)
def test_delay_met_changes_nothing_when_not_waiting_on_a_delay(
    make: Callable[[], WorkRecord], now: float
) -> None:
    assert lc.delay_met(make(), now=now) is None


# -- set_progress


def test_set_progress_on_a_running_work() -> None:
    before = running()
    change = lc.set_progress(before, {"pct": 75})
    assert change is not None
    assert change.before is before
    assert change.after == attrs.evolve(before, progress={"pct": 75})


def test_set_progress_replaces_rather_than_merges() -> None:
    first = lc.set_progress(running(), {"a": 1})
    assert first is not None
    second = lc.set_progress(first.after, {"b": 2})
    assert second is not None
    assert second.after.progress == {"b": 2}


@pytest.mark.parametrize(
    "make",
    [
        enqueued,
        blocked,
        lambda: finished(lc.Succeeded()),
        lambda: finished(lc.Failed()),
        cancelled,
    ],
    ids=["enqueued", "blocked", "succeeded", "failed", "cancelled"],
)
def test_set_progress_outside_a_run_is_ignored(make: Callable[[], WorkRecord]) -> None:
    assert lc.set_progress(make(), {"pct": 10}) is None


# -- chains and unique plans (semantics 18-20, 22-25) ----------------------------------------


def succeeded(output: Data = EMPTY) -> WorkRecord:
    return finished(lc.Succeeded(output))


def failed() -> WorkRecord:
    return finished(lc.Failed())


@pytest.mark.parametrize(
    ("prerequisites", "state"),
    [
        (lambda: [succeeded(), succeeded()], S.ENQUEUED),
        (lambda: [succeeded(), running()], S.BLOCKED),
        (lambda: [blocked(), enqueued()], S.BLOCKED),
        (lambda: [cancelled(), running()], S.CANCELLED),
        (lambda: [cancelled(), failed()], S.FAILED),  # failure outranks cancellation
        (lambda: [running(), failed()], S.FAILED),
    ],
)
def test_resolve_follows_rule_18(
    prerequisites: Callable[[], list[WorkRecord]], state: wm.WorkState
) -> None:
    child = enqueued(initial_delay=5)
    resolved = lc.resolve(child, prerequisites(), now=NOW)
    assert resolved.state is state
    assert resolved.next_run_at == (NOW + 5 if state is S.ENQUEUED else None)
    assert (resolved.finished_at == NOW) is state.is_finished


def test_unblock_merges_and_a_mismatch_fails() -> None:
    child = enqueued(input={"k": "own", "x": 1})
    merged = lc.unblock(child, [{"k": "first"}, {"k": "second", "y": 2}], now=NOW)
    assert merged.state is S.ENQUEUED
    assert dict(merged.input) == {"k": "second", "x": 1, "y": 2}
    arrays = enqueued(input={"k": 1}, input_merger=wm.ArrayCreatingInputMerger)
    assert dict(lc.unblock(arrays, [{"k": [2, 3]}], now=NOW).input) == {"k": [1, 2, 3]}
    bad = lc.unblock(arrays, [{"k": "text"}], now=NOW)
    assert bad.state is S.FAILED
    assert bad.error is not None
    assert bad.error.type == lc.MERGE_FAILED


def test_prerequisite_ended() -> None:
    child = blocked()
    assert lc.prerequisite_ended(succeeded(), child) is None
    gone = lc.prerequisite_ended(failed(), child)
    assert gone is not None
    assert gone.state is S.FAILED
    assert gone.error is not None
    assert gone.error.type == lc.PREREQUISITE_FAILED
    stopped = lc.prerequisite_ended(cancelled(), child)
    assert stopped is not None
    assert stopped.state is S.CANCELLED


# -- resolving new chained works, and propagation (semantics 18, 19, 29)


def test_resolve_new_resolves_each_work_against_stored_and_earlier_new_ones() -> None:
    done, busy = succeeded({"a": 1}), running()
    first, second, third = enqueued(), enqueued(), enqueued()
    links = {first.id: [done.id], second.id: [first.id, busy.id, first.id], third.id: []}
    known = {done.id: done, busy.id: busy}
    stored, waiting, edges = lc.resolve_new([first, second, third], links, known)
    assert [r.state for r in stored] == [S.ENQUEUED, S.BLOCKED, S.ENQUEUED]
    assert dict(stored[0].input) == {"a": 1}  # merged from the stored prerequisite
    assert waiting == [0, 2, 0]  # a repeated prerequisite counts once
    assert edges == [(done.id, first.id, 0), (first.id, second.id, 0), (busy.id, second.id, 1)]
    assert stored[2] is third  # no prerequisites: stored as given
    assert set(known) == {done.id, busy.id, first.id, second.id, third.id}


@pytest.mark.parametrize(
    ("prerequisite", "state", "left"),
    [
        (lambda: failed(), S.FAILED, 0),
        (lambda: cancelled(), S.CANCELLED, 0),
        (lambda: blocked(), S.BLOCKED, 1),
    ],
)
def test_resolve_new_states(
    prerequisite: Callable[[], WorkRecord], state: wm.WorkState, left: int
) -> None:
    pre, new = prerequisite(), enqueued()
    stored, waiting, _ = lc.resolve_new([new], {new.id: [pre.id]}, {pre.id: pre})
    assert (stored[0].state, waiting) == (state, [left])


def test_resolve_new_refuses_an_unknown_prerequisite() -> None:
    new = enqueued()
    with pytest.raises(wm.InvalidRequestError, match="no such work"):
        lc.resolve_new([new], {new.id: ["nope"]}, {})


def test_split_level_puts_failures_and_cancellations_first() -> None:
    ok, bad, gone = succeeded(), failed(), cancelled()
    level = {ok.id: (ok, "o1"), bad.id: (bad, "o2"), gone.id: (gone, "o3")}
    stopped, done = lc.split_level(level)
    assert stopped == {bad.id: (bad, "o2"), gone.id: (gone, "o3")}
    assert done == [(ok, "o1")]


@pytest.mark.parametrize(
    ("ended", "state", "origin"),
    [
        (["cancelled", "failed"], S.FAILED, "failed"),  # a failure outranks a cancellation
        (["failed", "cancelled"], S.FAILED, "failed"),
        (["cancelled", "cancelled2"], S.CANCELLED, "cancelled"),  # else the first read
        (["failed", "failed2"], S.FAILED, "failed"),
    ],
)
def test_stop_dependents(ended: list[str], state: wm.WorkState, origin: str) -> None:
    makers = {"failed": failed, "failed2": failed, "cancelled": cancelled, "cancelled2": cancelled}
    works = {name: makers[name]() for name in ended}
    stopped = {w.id: (w, name) for name, w in works.items()}
    child, other = blocked(), blocked()
    found = [(works[name].id, child) for name in ended] + [(works[ended[1]].id, other)]
    decided = lc.stop_dependents(stopped, found)
    assert [(o, r.id, r.state) for o, r in decided] == [
        (origin, child.id, state),
        (ended[1], other.id, works[ended[1]].state),
    ]
    by_id = {r.id: r for _, r in decided}
    if state is S.FAILED:
        error = by_id[child.id].error
        assert error is not None
        assert error.message == f"prerequisite {works[origin].id} failed"
    assert by_id[child.id].finished_at == works[origin].finished_at


@pytest.mark.parametrize(("left", "ready"), [(1, False), (0, True), (-1, True)])
def test_ready_dependents_are_those_waiting_for_none(left: int, ready: bool) -> None:
    child = blocked()
    assert lc.ready_dependents([(left, child)]) == ([child] if ready else [])


def test_unblock_dependents_merge_at_the_last_success_of_the_level() -> None:
    early = attrs.evolve(succeeded(), finished_at=NOW - 5)
    late = attrs.evolve(succeeded(), finished_at=NOW)
    child = attrs.evolve(blocked(), initial_delay=2.0)
    decided = lc.unblock_dependents(
        [(early, "first"), (late, "second")], [(child, [{"x": 1}, {"y": 2}])]
    )
    assert len(decided) == 1
    origin, after = decided[0]
    assert origin == "first"
    assert (after.state, after.next_run_at, after.last_enqueue_time) == (S.ENQUEUED, NOW + 2, NOW)
    assert dict(after.input) == {"x": 1, "y": 2}


def test_next_level_holds_the_dependents_a_level_finished() -> None:
    gone, bad, unblocked = cancelled(), failed(), enqueued()
    level = lc.next_level([("a", gone), ("b", bad), ("c", unblocked)])
    assert level == {gone.id: (gone, "a"), bad.id: (bad, "b")}


def test_plan_unique_append_links_the_first_step_to_the_leaves() -> None:
    leaf_a, leaf_b, inner = succeeded(), running(), succeeded()
    first, second = enqueued(), enqueued()
    links = {second.id: (first.id,)}
    plan = lc.plan_unique(
        "APPEND", [inner, leaf_a, leaf_b], [leaf_b, leaf_a], [first, second],
        prerequisites=links, now=NOW,
    )  # fmt: skip
    assert plan.cancels == ()
    assert plan.deletes == ()
    assert set(plan.prerequisites[first.id]) == {leaf_a.id, leaf_b.id}
    assert plan.prerequisites[second.id] == (first.id,)


def test_plan_unique_append_or_replace_replaces_after_a_failed_leaf() -> None:
    old_failed, old_running, new = failed(), running(), enqueued()
    plan = lc.plan_unique(
        "APPEND_OR_REPLACE", [old_failed, old_running], [old_failed], [new], now=NOW
    )
    assert [c.after.state for c in plan.cancels] == [S.CANCELLED]
    assert set(plan.deletes) == {old_failed.id, old_running.id}
    assert plan.prerequisites == {}
    appended = lc.plan_unique("APPEND_OR_REPLACE", [old_running], [old_running], [new], now=NOW)
    assert appended.prerequisites == {new.id: (old_running.id,)}
    assert appended.deletes == ()


# -- records are values


def _snapshot(record: WorkRecord) -> dict[str, object]:
    return {f.name: getattr(record, f.name) for f in attrs.fields(WorkRecord)}


_TRANSITIONS: Final[dict[str, tuple[Callable[[], WorkRecord], Callable[[WorkRecord], Any]]]] = {
    "claim": (enqueued, lambda r: lc.claim(r, now=NOW, owner=OWNER)),
    "succeed": (running, lambda r: lc.finish(r, lc.Succeeded({"x": 1}), now=NOW)),
    "fail": (running, lambda r: lc.finish(r, lc.Failed(), now=NOW)),
    "retry": (running, lambda r: lc.finish(r, lc.Retry(), now=NOW)),
    "retry-exhausted": (
        lambda: running(max_attempts=1),
        lambda r: lc.finish(r, lc.Retry(), now=NOW),
    ),
    "interrupt": (running, lambda r: lc.finish(r, lc.Interrupted(R.TIMEOUT), now=NOW)),
    "unstarted": (running, lambda r: lc.finish(r, lc.Unstarted(R.SHUTDOWN), now=NOW)),
    "cancel": (running, lambda r: lc.cancel(r, now=NOW)),
    "recover": (running, lambda r: lc.recover(r, now=NOW)),
    "progress": (running, lambda r: lc.set_progress(r, {"pct": 75})),
    "unblock": (blocked, lambda r: lc.unblock(r, [{"a": 1}], now=NOW)),
    "prerequisite-failed": (
        blocked,
        lambda r: lc.prerequisite_failed(r, finished(lc.Failed()), now=NOW),
    ),
    "prerequisite-cancelled": (blocked, lambda r: lc.prerequisite_cancelled(r, now=NOW)),
}


@pytest.mark.parametrize("name", list(_TRANSITIONS))
def test_transitions_never_change_the_record_they_start_from(name: str) -> None:
    """WorkRecord is not a frozen class (copies are cheaper that way), so this checks
    what frozen would enforce: a transition returns a new record and leaves the one it
    was given, which stores, events and WorkInfos share, exactly as it was."""
    make, transition = _TRANSITIONS[name]
    record = make()
    before = _snapshot(record)
    result = transition(record)
    assert _snapshot(record) == before
    after = result.after if isinstance(result, lc.Change) else result
    assert after is not record
    assert _snapshot(after) != before
