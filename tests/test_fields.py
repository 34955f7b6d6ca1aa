"""The hot paths that build records and requests field by field are generated, or
checked, from the one list of fields the class declares: adding or moving a field
cannot misplace a value or leave one unset without failing at once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import attrs
import pytest

import wm_async as wm
from wm_async._api import requests as requests_module
from wm_async._core import record as record_module
from wm_async._core.record import WorkRecord, builder


@attrs.define(slots=True)
class Pair:
    a: int
    b: int


@attrs.define(slots=True)
class PairReversed:
    b: int
    a: int


@attrs.define(slots=True)
class PairGrown:
    a: int
    b: int
    c: int


@pytest.mark.parametrize("cls", [Pair, PairReversed])
def test_a_generated_builder_puts_each_value_in_its_field_whatever_the_order(
    cls: type[Pair | PairReversed],
) -> None:
    build = builder(cls, "make", "x, y", {"a": "x", "b": "y"})
    made = build(1, 2)
    assert isinstance(made, cls)
    assert (made.a, made.b) == (1, 2)


def test_a_builder_refuses_a_table_that_misses_a_field() -> None:
    # What adding a field to the record without saying where its value comes from does:
    # the import fails, naming the field.
    with pytest.raises(TypeError, match=r"missing \['c'\]"):
        builder(PairGrown, "make", "x, y", {"a": "x", "b": "y"})


def test_a_builder_refuses_a_source_for_no_field() -> None:
    with pytest.raises(TypeError, match=r"unknown \['z'\]"):
        builder(Pair, "make", "x, y", {"a": "x", "b": "y", "z": "x"})


def test_the_record_tables_name_every_field_of_the_record() -> None:
    fields = {f.name for f in attrs.fields(WorkRecord)}
    assert set(record_module._NEW_ONE_TIME) == fields
    assert set(record_module._NEW_PERIODIC) == fields


def test_a_new_record_holds_every_value_of_its_request() -> None:
    """Every field of a new record, each checked against the request it came from (with
    a value that differs from every other field's)."""
    work_id = uuid.uuid4()
    request = wm.OneTimeWorkRequest(
        "w",
        input={"k": 1},
        constraints=wm.Constraints(signals={"s"}),
        initial_delay=timedelta(seconds=7),
        backoff=wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(seconds=3)),
        tags={"t"},
        timeout=timedelta(seconds=11),
        max_attempts=5,
        priority=-3,
        id=work_id,
        input_merger=wm.ArrayCreatingInputMerger,
    )
    record = WorkRecord.from_request(request, now=1000.0, unique_name="u")
    expected = {
        "id": str(work_id),
        "worker": "w",
        "input": {"k": 1},
        "tags": frozenset({"t", "w"}),
        "constraints": wm.Constraints(signals={"s"}),
        "initial_delay": 7.0,
        "backoff": wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(seconds=3)),
        "timeout": 11.0,
        "max_attempts": 5,
        "expedited": False,
        "input_merger": "array_creating",
        "unique_name": "u",
        "generation": 0,
        "enqueued_at": 1000.0,
        "state": wm.WorkState.ENQUEUED,
        "run_attempt_count": 0,
        "next_run_at": 1007.0,
        "last_enqueue_time": 1000.0,
        "started_at": None,
        "finished_at": None,
        "output": {},
        "progress": {},
        "stop_reason": wm.StopReason.NOT_STOPPED,
        "error": None,
        "period_count": 0,
        "owner": None,
        "periodic": None,
        "priority": -3,
        "headers": {},
    }
    assert set(expected) == {f.name for f in attrs.fields(WorkRecord)}
    assert {name: getattr(record, name) for name in expected} == expected


def test_a_new_periodic_record_is_due_after_its_delay_and_the_interval_less_the_flex() -> None:
    request = wm.PeriodicWorkRequest(
        "p",
        repeat_interval=timedelta(minutes=10),
        flex_interval=timedelta(minutes=4),
        initial_delay=timedelta(seconds=5),
    )
    record = WorkRecord.from_periodic_request(request, now=1000.0)
    assert record.periodic == request.periodicity
    assert record.next_run_at == 1000.0 + 5 + 6 * 60
    assert record.expedited is False
    assert record.input_merger == "overwriting"


def test_a_request_built_by_hand_sets_every_field() -> None:
    for request in (
        wm.OneTimeWorkRequest("w"),
        wm.OneTimeWorkRequest("w", expedited=True, max_attempts=2, input={"a": 1}),
    ):
        assert requests_module.unset_fields(request) == []


def test_the_import_time_check_names_a_field_left_unset() -> None:
    @attrs.define(slots=True, init=False)
    class Half:
        a: int
        b: int

        def __init__(self) -> None:
            self.a = 1  # b forgotten, as a new field would be

    with pytest.raises(TypeError, match=r"leaves \['b'\] unset"):
        requests_module.check_fills_every_field(Half)


def test_a_subclass_of_a_request_is_filled_by_name() -> None:
    @attrs.frozen(init=False)
    class Mine(wm.OneTimeWorkRequest):
        pass

    mine = Mine("w", max_attempts=3, tags={"x"})
    assert requests_module.unset_fields(mine) == []
    assert (mine.worker, mine.max_attempts, mine.tags) == ("w", 3, frozenset({"w", "x"}))
