"""Public value types: construction, converters, and every validator's failure path.

Converters normalise what callers pass, validators reject the rest
with an InvalidRequestError that names the field and shows the value.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wm_async as wm
from wm_async._core.validators import (
    MAX_DATA_DEPTH,
    MAX_NAME_LENGTH,
)

T = TypeVar("T")

NAN = float("nan")
INF = float("inf")


def request(**fields: Any) -> wm.OneTimeWorkRequest:
    """A request built from deliberately ill-typed fields (hence ``Any``)."""
    fields.setdefault("worker", "w")
    return wm.OneTimeWorkRequest(**fields)


def build(make: Callable[..., T], **fields: Any) -> T:
    """Call ``make`` with deliberately ill-typed fields."""
    return make(**fields)


def expect_invalid(
    make: Callable[[], object], field: str, shown: object
) -> wm.InvalidRequestError:
    """``make()`` raises InvalidRequestError naming ``field`` and showing ``shown``."""
    with pytest.raises(wm.InvalidRequestError) as info:
        make()
    err = info.value
    message = str(err)
    assert err.field == field
    assert field in message
    # repr, not ==, so that NaN compares equal to itself; long values are shortened.
    assert repr(err.value) == repr(shown)
    assert repr(shown)[:150] in message
    return err


def nested(levels: int) -> object:
    """A scalar wrapped in ``levels`` lists."""
    value: object = 0
    for _ in range(levels):
        value = [value]
    return value


class CustomMerger:
    """Looks like a merger, but is not one of the two wm_async knows how to persist."""

    name = "custom"

    @staticmethod
    def merge(inputs: object) -> dict[str, object]:
        return {}


# -- OneTimeWorkRequest: defaults and converters


def test_request_defaults() -> None:
    req = wm.OneTimeWorkRequest("sync_feed")
    assert req.worker == "sync_feed"
    assert req.input == {}
    assert req.constraints == wm.Constraints()
    assert req.initial_delay == timedelta(0)
    assert req.backoff == wm.Backoff(wm.BackoffPolicy.EXPONENTIAL, timedelta(seconds=30))
    assert req.backoff.max_delay == timedelta(hours=5)
    assert req.tags == frozenset({"sync_feed"})
    assert req.timeout is None
    assert req.max_attempts is None
    assert req.expedited is False
    assert req.input_merger is wm.OverwritingInputMerger
    assert isinstance(req.id, uuid.UUID)


def test_request_ids_are_random_unless_given() -> None:
    assert wm.OneTimeWorkRequest("w").id != wm.OneTimeWorkRequest("w").id
    wid = uuid.uuid4()
    assert wm.OneTimeWorkRequest("w", id=wid).id == wid


def test_request_id_given_as_str_becomes_uuid() -> None:
    wid = uuid.uuid4()
    req = request(id=str(wid))
    assert req.id == wid
    assert isinstance(req.id, uuid.UUID)


def test_request_is_frozen() -> None:
    req = wm.OneTimeWorkRequest("w")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        req.worker = "other"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del req.tags
    # Built without going through the frozen setters, and none the less a plain request
    # with a plain UUID once built.
    assert type(req) is wm.OneTimeWorkRequest
    assert type(req.id) is uuid.UUID
    with pytest.raises(TypeError):
        req.id.int = 1  # type: ignore[misc]


def test_a_subclass_of_request_is_built_field_by_field() -> None:
    class Tagged(wm.OneTimeWorkRequest):
        __slots__ = ("note",)
        note: str

    req = Tagged("w", tags={"t"}, max_attempts=3)
    object.__setattr__(req, "note", "mine")
    assert type(req) is Tagged
    assert (req.worker, req.max_attempts, req.note) == ("w", 3, "mine")
    assert req.tags == {"w", "t"}
    assert req == attrs.evolve(req)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        req.worker = "other"  # type: ignore[misc]


def test_every_field_of_a_built_request_is_set() -> None:
    req = wm.OneTimeWorkRequest("w")
    for field in attrs.fields(wm.OneTimeWorkRequest):
        getattr(req, field.name)  # an unset slot raises AttributeError
    assert attrs.evolve(req) == req


def test_worker_name_of_maximum_length_is_accepted() -> None:
    name = "x" * MAX_NAME_LENGTH
    assert wm.OneTimeWorkRequest(name).worker == name


@pytest.mark.parametrize("field", ["initial_delay", "timeout"])
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5, timedelta(seconds=5)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=2), timedelta(minutes=2)),
    ],
    ids=["int", "float", "timedelta"],
)
def test_request_durations_become_timedelta(
    field: str, given: object, expected: timedelta
) -> None:
    value = getattr(request(**{field: given}), field)
    assert value == expected
    assert isinstance(value, timedelta)


def test_zero_initial_delay_is_allowed() -> None:
    assert request(initial_delay=0).initial_delay == timedelta(0)


@pytest.mark.parametrize(
    "tags",
    [
        ["sync", "feed"],
        ("sync", "feed"),
        {"sync", "feed"},
        frozenset({"sync", "feed"}),
        (t for t in ("sync", "feed")),
        dict.fromkeys(("sync", "feed")),
        ["sync", "feed", "sync"],
    ],
    ids=["list", "tuple", "set", "frozenset", "generator", "dict", "duplicates"],
)
def test_tags_accept_any_iterable_of_str_and_include_the_worker(tags: Iterable[str]) -> None:
    req = wm.OneTimeWorkRequest("sync_feed", tags=tags)
    assert req.tags == frozenset({"sync", "feed", "sync_feed"})
    assert isinstance(req.tags, frozenset)


def test_tags_already_naming_the_worker_are_unchanged() -> None:
    assert wm.OneTimeWorkRequest("w", tags={"w", "x"}).tags == frozenset({"w", "x"})


def test_input_is_copied() -> None:
    given: dict[str, Any] = {"urls": ["a"], "opts": {"depth": 1}}
    req = wm.OneTimeWorkRequest("w", input=given)
    given["urls"].append("b")
    given["opts"]["depth"] = 2
    given["new"] = True
    assert req.input == {"urls": ["a"], "opts": {"depth": 1}}


def test_input_none_or_empty_is_empty() -> None:
    assert request(input=None).input == {}
    assert request(input={}).input == {}


def test_input_tuples_become_lists() -> None:
    # Data is JSON: what a worker gets back after a store round trip is a list.
    assert request(input={"pair": (1, 2)}).input == {"pair": [1, 2]}


def test_input_nesting_up_to_the_limit_is_accepted() -> None:
    # the input object itself plus MAX_DATA_DEPTH - 1 nested lists
    assert request(input={"a": nested(MAX_DATA_DEPTH - 1)}).input == {
        "a": nested(MAX_DATA_DEPTH - 1)
    }


def test_input_merger_accepts_both_mergers() -> None:
    merger = wm.ArrayCreatingInputMerger
    assert request(input_merger=merger).input_merger is merger


def test_expedited_accepts_network_and_storage_constraints() -> None:
    constraints = wm.Constraints(
        required_network=wm.NetworkType.CONNECTED, requires_storage_not_low=True
    )
    req = wm.OneTimeWorkRequest("w", expedited=True, constraints=constraints)
    assert req.expedited is True
    assert req.constraints == constraints


@pytest.mark.parametrize("max_attempts", [1, 10, None])
def test_max_attempts_accepts_positive_ints_and_none(max_attempts: int | None) -> None:
    assert wm.OneTimeWorkRequest("w", max_attempts=max_attempts).max_attempts == max_attempts


# -- OneTimeWorkRequest: every validator's failure path

_EXPEDITED_REJECTS = [
    wm.Constraints(requires_charging=True),
    wm.Constraints(requires_battery_not_low=True),
    wm.Constraints(requires_device_idle=True),
    wm.Constraints(signals={"db_up"}),
]
_AN_OBJECT = object()
_A_MERGER_INSTANCE = wm.OverwritingInputMerger()  # the class is expected, not an instance
_A_UUID_TEXT = "0b0e8e8e-0000-4000-8000-000000000000"


@pytest.mark.parametrize(
    ("fields", "field", "shown"),
    [
        # worker names
        ({"worker": ""}, "worker", ""),
        ({"worker": "x" * (MAX_NAME_LENGTH + 1)}, "worker", "x" * (MAX_NAME_LENGTH + 1)),
        ({"worker": "sync\nfeed"}, "worker", "sync\nfeed"),
        ({"worker": "\x00"}, "worker", "\x00"),
        ({"worker": "bad\ud800"}, "worker", "bad\ud800"),
        ({"worker": 5}, "worker", 5),
        ({"worker": None}, "worker", None),
        ({"worker": b"sync"}, "worker", b"sync"),
        # initial_delay
        ({"initial_delay": -1}, "initial_delay", timedelta(seconds=-1)),
        ({"initial_delay": timedelta(seconds=-1)}, "initial_delay", timedelta(seconds=-1)),
        ({"initial_delay": NAN}, "initial_delay", NAN),
        ({"initial_delay": INF}, "initial_delay", INF),
        ({"initial_delay": -INF}, "initial_delay", -INF),
        ({"initial_delay": True}, "initial_delay", True),
        ({"initial_delay": "5"}, "initial_delay", "5"),
        ({"initial_delay": None}, "initial_delay", None),
        ({"initial_delay": 1e300}, "initial_delay", 1e300),
        # timeout
        ({"timeout": 0}, "timeout", timedelta(0)),
        ({"timeout": timedelta(0)}, "timeout", timedelta(0)),
        ({"timeout": -1.5}, "timeout", timedelta(seconds=-1.5)),
        ({"timeout": NAN}, "timeout", NAN),
        ({"timeout": INF}, "timeout", INF),
        ({"timeout": False}, "timeout", False),
        ({"timeout": "60"}, "timeout", "60"),
        # max_attempts
        ({"max_attempts": 0}, "max_attempts", 0),
        ({"max_attempts": -1}, "max_attempts", -1),
        ({"max_attempts": True}, "max_attempts", True),
        ({"max_attempts": 1.5}, "max_attempts", 1.5),
        ({"max_attempts": "3"}, "max_attempts", "3"),
        # expedited
        ({"expedited": 1}, "expedited", 1),
        ({"expedited": "yes"}, "expedited", "yes"),
        ({"expedited": True, "initial_delay": 1}, "initial_delay", timedelta(seconds=1)),
        *[({"expedited": True, "constraints": c}, "constraints", c) for c in _EXPEDITED_REJECTS],
        # input: not a mapping
        ({"input": [1, 2]}, "input", [1, 2]),
        ({"input": "a=1"}, "input", "a=1"),
        ({"input": 5}, "input", 5),
        # input: keys
        ({"input": {1: "a"}}, "input", 1),
        ({"input": {"a": {None: 1}}}, "input", None),
        ({"input": {"bad\udc00": 1}}, "input", "bad\udc00"),
        # input: values
        ({"input": {"a": NAN}}, "input", NAN),
        ({"input": {"a": INF}}, "input", INF),
        ({"input": {"a": [1, {"b": -INF}]}}, "input", -INF),
        ({"input": {"a": {1, 2}}}, "input", {1, 2}),
        ({"input": {"a": b"raw"}}, "input", b"raw"),
        ({"input": {"a": _AN_OBJECT}}, "input", _AN_OBJECT),
        ({"input": {"a": timedelta(1)}}, "input", timedelta(1)),
        ({"input": {"a": "bad\ud800"}}, "input", "bad\ud800"),
        ({"input": {"a": nested(MAX_DATA_DEPTH)}}, "input", "<deeply nested data>"),
        # tags
        ({"tags": "sync"}, "tags", "sync"),
        ({"tags": b"sync"}, "tags", b"sync"),
        ({"tags": 5}, "tags", 5),
        ({"tags": ["ok", ""]}, "tags", ""),
        ({"tags": ["ok", 5]}, "tags", 5),
        ({"tags": ["a\tb"]}, "tags", "a\tb"),
        # nested values of the wrong type
        ({"constraints": {"requires_charging": True}}, "constraints", {"requires_charging": True}),
        ({"constraints": None}, "constraints", None),
        ({"backoff": 30}, "backoff", 30),
        ({"backoff": "EXPONENTIAL"}, "backoff", "EXPONENTIAL"),
        # input_merger
        ({"input_merger": CustomMerger}, "input_merger", CustomMerger),
        ({"input_merger": "overwriting"}, "input_merger", "overwriting"),
        ({"input_merger": _A_MERGER_INSTANCE}, "input_merger", _A_MERGER_INSTANCE),
        # id
        ({"id": "not-a-uuid"}, "id", "not-a-uuid"),
        ({"id": 5}, "id", 5),
    ],
)
def test_request_rejects(fields: dict[str, Any], field: str, shown: object) -> None:
    expect_invalid(lambda: request(**fields), field, shown)


def test_cyclic_input_is_rejected_not_a_recursion_error() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    expect_invalid(lambda: request(input=cyclic), "input", "<deeply nested data>")


def test_messages_say_why() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: request(worker=""), "must be 1 to 255 characters"),
        (lambda: request(worker="a\nb"), "printable"),
        (lambda: request(initial_delay=-1), "must not be negative"),
        (lambda: request(initial_delay=NAN), "finite"),
        (lambda: request(timeout=0), "must be positive"),
        (lambda: request(max_attempts=0), "integer 1 to"),
        (lambda: request(expedited=True, initial_delay=1), "cannot be delayed"),
        (
            lambda: request(expedited=True, constraints=wm.Constraints(requires_charging=True)),
            "only network and storage",
        ),
        (lambda: request(input={"a": NAN}), "NaN and infinity are not JSON"),
        (lambda: request(input={1: 1}), "keys must be strings"),
        (lambda: request(input={"a": {1}}), "set is not a JSON type"),
        (lambda: request(input={"a": nested(MAX_DATA_DEPTH)}), f"deeper than {MAX_DATA_DEPTH}"),
        (lambda: request(tags="sync"), "collection of strings"),
    ]
    for make, reason in cases:
        with pytest.raises(wm.InvalidRequestError, match=reason):
            make()


def test_tags_with_unhashable_items_raise_invalid_request_error() -> None:
    # each item is checked before the frozenset hashes it (not a TypeError)
    expect_invalid(lambda: request(tags=[["sync"]]), "tags", ["sync"])


def test_signals_with_unhashable_items_raise_invalid_request_error() -> None:
    expect_invalid(lambda: build(wm.Constraints, signals=[{"db": 1}]), "signals", {"db": 1})


def test_input_with_an_int_too_long_to_serialise_raises_invalid_request_error() -> None:
    """BUG: Python refuses to turn ints over 4300 digits into text, so ``to_data``'s
    ``json.dumps`` raises a bare ValueError that names no field."""
    huge = 10**5000
    with pytest.raises(wm.InvalidRequestError) as info:
        request(input={"n": huge})
    assert info.value.field == "input"


# -- Constraints


def test_constraints_defaults() -> None:
    c = wm.Constraints()
    assert c.required_network is wm.NetworkType.NOT_REQUIRED
    assert c.requires_charging is False
    assert c.requires_battery_not_low is False
    assert c.requires_storage_not_low is False
    assert c.requires_device_idle is False
    assert c.signals == frozenset()


@pytest.mark.parametrize(
    "given", ["connected", "Connected", "CONNECTED", wm.NetworkType.CONNECTED]
)
def test_constraints_network_accepts_names_case_insensitively(given: object) -> None:
    assert build(wm.Constraints, required_network=given) == wm.Constraints(
        required_network=wm.NetworkType.CONNECTED
    )


def test_constraints_signals_become_a_frozenset() -> None:
    c = wm.Constraints(signals=["db_up", "db_up", "cache_up"])
    assert c.signals == frozenset({"db_up", "cache_up"})


@pytest.mark.parametrize(
    ("fields", "field", "shown"),
    [
        ({"required_network": "wifi"}, "required_network", "wifi"),
        ({"required_network": 1}, "required_network", 1),
        ({"required_network": None}, "required_network", None),
        ({"requires_charging": 1}, "requires_charging", 1),
        ({"requires_battery_not_low": "yes"}, "requires_battery_not_low", "yes"),
        ({"requires_storage_not_low": None}, "requires_storage_not_low", None),
        ({"requires_device_idle": 0}, "requires_device_idle", 0),
        ({"signals": "db_up"}, "signals", "db_up"),
        ({"signals": [""]}, "signals", ""),
        ({"signals": [3]}, "signals", 3),
        ({"signals": None}, "signals", None),
    ],
)
def test_constraints_reject(fields: dict[str, Any], field: str, shown: object) -> None:
    expect_invalid(lambda: build(wm.Constraints, **fields), field, shown)


def test_constraints_network_error_lists_the_choices() -> None:
    with pytest.raises(wm.InvalidRequestError, match="CONNECTED") as info:
        build(wm.Constraints, required_network="wifi")
    assert "UNMETERED" in str(info.value)


@pytest.mark.parametrize(
    ("constraints", "names"),
    [
        (wm.Constraints(), set()),
        (wm.Constraints(required_network=wm.NetworkType.CONNECTED), {"network"}),
        (wm.Constraints(required_network=wm.NetworkType.UNMETERED), {"network_unmetered"}),
        (wm.Constraints(required_network=wm.NetworkType.METERED), {"network_metered"}),
        (wm.Constraints(required_network=wm.NetworkType.NOT_ROAMING), {"network_not_roaming"}),
        (wm.Constraints(requires_charging=True), {"charging"}),
        (wm.Constraints(requires_battery_not_low=True), {"battery_not_low"}),
        (wm.Constraints(requires_storage_not_low=True), {"storage_not_low"}),
        (wm.Constraints(requires_device_idle=True), {"device_idle"}),
        (wm.Constraints(signals={"db_up", "cache_up"}), {"db_up", "cache_up"}),
        (
            wm.Constraints(
                required_network=wm.NetworkType.CONNECTED,
                requires_charging=True,
                requires_battery_not_low=True,
                requires_storage_not_low=True,
                requires_device_idle=True,
                signals={"db_up"},
            ),
            {"network", "charging", "battery_not_low", "storage_not_low", "device_idle", "db_up"},
        ),
    ],
)
def test_constraints_signal_names(constraints: wm.Constraints, names: set[str]) -> None:
    assert constraints.signal_names() == frozenset(names)


_CONSTRAINTS = [
    wm.Constraints(),
    wm.Constraints(required_network=wm.NetworkType.UNMETERED),
    wm.Constraints(requires_charging=True, requires_device_idle=True),
    wm.Constraints(requires_battery_not_low=True, requires_storage_not_low=True),
    wm.Constraints(signals={"b", "a"}),
    wm.Constraints(
        required_network=wm.NetworkType.CONNECTED,
        requires_charging=True,
        requires_battery_not_low=True,
        requires_storage_not_low=True,
        requires_device_idle=True,
        signals={"db_up"},
    ),
]


@pytest.mark.parametrize("constraints", _CONSTRAINTS)
def test_constraints_json_round_trip(constraints: wm.Constraints) -> None:
    # through JSON text, as a store persists it
    persisted = json.loads(json.dumps(constraints.to_json()))
    assert wm.Constraints.from_json(persisted) == constraints


def test_constraints_to_json_omits_defaults() -> None:
    assert wm.Constraints().to_json() == {}
    assert wm.Constraints(signals={"b", "a"}).to_json() == {"signals": ["a", "b"]}


# -- Backoff


def test_backoff_defaults() -> None:
    b = wm.Backoff()
    assert b.policy is wm.BackoffPolicy.EXPONENTIAL
    assert b.delay == timedelta(seconds=30)
    assert b.max_delay == timedelta(hours=5)


@pytest.mark.parametrize("given", ["linear", "Linear", "LINEAR", wm.BackoffPolicy.LINEAR])
def test_backoff_policy_accepts_names_case_insensitively(given: object) -> None:
    assert build(wm.Backoff, policy=given).policy is wm.BackoffPolicy.LINEAR


@pytest.mark.parametrize(
    ("given", "expected"),
    [(10, timedelta(seconds=10)), (0.5, timedelta(seconds=0.5)), (timedelta(0), timedelta(0))],
    ids=["int", "float", "timedelta"],
)
def test_backoff_durations_become_timedelta(given: object, expected: timedelta) -> None:
    b = build(wm.Backoff, delay=given, max_delay=given)
    assert b == wm.Backoff(delay=expected, max_delay=expected)


@pytest.mark.parametrize(
    ("fields", "field", "shown"),
    [
        ({"policy": "quadratic"}, "backoff.policy", "quadratic"),
        ({"policy": None}, "backoff.policy", None),
        ({"delay": -1}, "backoff.delay", timedelta(seconds=-1)),
        ({"delay": NAN}, "backoff.delay", NAN),
        ({"delay": INF}, "backoff.delay", INF),
        ({"delay": True}, "backoff.delay", True),
        ({"delay": "30"}, "backoff.delay", "30"),
        ({"max_delay": -1}, "backoff.max_delay", timedelta(seconds=-1)),
        ({"max_delay": NAN}, "backoff.max_delay", NAN),
        ({"max_delay": None}, "backoff.max_delay", None),
        ({"delay": 60, "max_delay": 30}, "backoff.max_delay", timedelta(seconds=30)),
    ],
)
def test_backoff_rejects(fields: dict[str, Any], field: str, shown: object) -> None:
    expect_invalid(lambda: build(wm.Backoff, **fields), field, shown)


def test_backoff_max_delay_below_delay_says_why() -> None:
    with pytest.raises(wm.InvalidRequestError, match="must be >= delay"):
        wm.Backoff(delay=timedelta(minutes=1), max_delay=timedelta(seconds=30))


def test_backoff_max_delay_equal_to_delay_is_allowed() -> None:
    b = wm.Backoff(delay=30, max_delay=30)
    assert b.delay_for(5) == 30.0


@pytest.mark.parametrize(
    ("backoff", "attempts", "seconds"),
    [
        (wm.Backoff(), 1, 30.0),
        (wm.Backoff(), 2, 60.0),
        (wm.Backoff(), 3, 120.0),
        (wm.Backoff(), 10, 30.0 * 2**9),
        (wm.Backoff(), 11, 5 * 3600.0),  # 30 * 2**10 = 30720 s, capped at 5 h
        (wm.Backoff(wm.BackoffPolicy.EXPONENTIAL, 10, max_delay=100), 4, 80.0),
        (wm.Backoff(wm.BackoffPolicy.EXPONENTIAL, 10, max_delay=100), 5, 100.0),
        (wm.Backoff(wm.BackoffPolicy.LINEAR, 10), 1, 10.0),
        (wm.Backoff(wm.BackoffPolicy.LINEAR, 10), 3, 30.0),
        (wm.Backoff(wm.BackoffPolicy.LINEAR, 10, max_delay=25), 3, 25.0),
        (wm.Backoff(wm.BackoffPolicy.LINEAR, 1.5), 4, 6.0),
        (wm.Backoff(wm.BackoffPolicy.EXPONENTIAL, 0), 50, 0.0),
        (wm.Backoff(wm.BackoffPolicy.LINEAR, 0), 50, 0.0),
    ],
)
def test_backoff_delay_for(backoff: wm.Backoff, attempts: int, seconds: float) -> None:
    assert backoff.delay_for(attempts) == pytest.approx(seconds)


@pytest.mark.parametrize("policy", list(wm.BackoffPolicy))
@pytest.mark.parametrize("attempts", [1_100, 10**6, 2**63, 10**100])
def test_backoff_delay_for_huge_attempts_is_capped_not_overflowing(
    policy: wm.BackoffPolicy, attempts: int
) -> None:
    assert wm.Backoff(policy, 30).delay_for(attempts) == 5 * 3600.0
    # the largest duration accepted as base and cap: the product overflows, the cap holds
    longest = timedelta(days=365 * 100)
    biggest = wm.Backoff(policy, longest, max_delay=longest)
    assert biggest.delay_for(attempts) == longest.total_seconds()


# -- Result


def test_result_success() -> None:
    assert wm.Result.success() == wm.Result(kind=wm.ResultKind.SUCCESS, output={})
    result = wm.Result.success({"items": 3})
    assert result.kind is wm.ResultKind.SUCCESS
    assert result.output == {"items": 3}


def test_result_failure() -> None:
    result = wm.Result.failure({"reason": "gone"})
    assert result.kind is wm.ResultKind.FAILURE
    assert result.output == {"reason": "gone"}
    assert wm.Result.failure().output == {}


def test_result_retry() -> None:
    result = wm.Result.retry()
    assert result.kind is wm.ResultKind.RETRY
    assert result.output == {}


def test_result_output_is_copied() -> None:
    given: dict[str, Any] = {"items": [1]}
    result = wm.Result.success(given)
    given["items"].append(2)
    assert result.output == {"items": [1]}


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (lambda: wm.Result.success({"a": NAN}), NAN),
        (lambda: build(wm.Result.failure, output={"a": {1}}), {1}),
        (lambda: build(wm.Result.success, output=[1]), [1]),
    ],
)
def test_result_output_is_validated(make: Callable[[], object], shown: object) -> None:
    expect_invalid(make, "output", shown)


def test_result_kind_accepts_names_and_rejects_others() -> None:
    """BUG: ``Result.kind`` has no converter or validator, so ``Result(kind="success")`` is
    accepted as a str, and the executor, which compares ``kind`` by identity, records the
    work as FAILED."""
    assert build(wm.Result, kind="success") == wm.Result.success()
    expect_invalid(lambda: build(wm.Result, kind="done"), "kind", "done")


# -- WorkState and other enums


@pytest.mark.parametrize(
    ("state", "finished"),
    [
        (wm.WorkState.ENQUEUED, False),
        (wm.WorkState.RUNNING, False),
        (wm.WorkState.BLOCKED, False),
        (wm.WorkState.SUCCEEDED, True),
        (wm.WorkState.FAILED, True),
        (wm.WorkState.CANCELLED, True),
    ],
)
def test_work_state_is_finished(state: wm.WorkState, finished: bool) -> None:
    assert state.is_finished is finished


def test_stop_reasons_are_the_documented_ones() -> None:
    assert {r.name for r in wm.StopReason} == {
        "NOT_STOPPED",
        "CANCELLED_BY_APP",
        "TIMEOUT",
        "SHUTDOWN",
        "UNKNOWN",
        "CONSTRAINT_CONNECTIVITY",
        "CONSTRAINT_CHARGING",
        "CONSTRAINT_BATTERY_NOT_LOW",
        "CONSTRAINT_STORAGE_NOT_LOW",
        "CONSTRAINT_DEVICE_IDLE",
        "CONSTRAINT_SIGNAL",
        "LEASE_LOST",
    }


# -- WorkQuery


def test_work_query_ids_given_as_str_become_uuids() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    query = build(wm.WorkQuery, ids=[str(a), b])
    assert query.ids == frozenset({a, b})
    assert query.id_keys == frozenset({str(a), str(b)})


def test_work_query_states_accept_names_case_insensitively() -> None:
    query = build(wm.WorkQuery, states=["failed", "Succeeded", wm.WorkState.CANCELLED])
    assert query == wm.WorkQuery(
        states={wm.WorkState.FAILED, wm.WorkState.SUCCEEDED, wm.WorkState.CANCELLED}
    )


def test_work_query_fields_become_frozensets() -> None:
    query = wm.WorkQuery(tags=["sync", "sync"], unique_names=("feed",))
    assert query.tags == frozenset({"sync"})
    assert query.unique_names == frozenset({"feed"})
    assert query.ids == frozenset()
    assert query.states == frozenset()


@pytest.mark.parametrize(
    ("fields", "field", "shown"),
    [
        ({"ids": _A_UUID_TEXT}, "ids", _A_UUID_TEXT),
        ({"ids": ["not-a-uuid"]}, "ids", "not-a-uuid"),
        ({"ids": [5]}, "ids", 5),
        ({"ids": 5}, "ids", 5),
        ({"tags": "sync"}, "tags", "sync"),
        ({"tags": [""]}, "tags", ""),
        ({"unique_names": "feed"}, "unique_names", "feed"),
        ({"unique_names": [None]}, "unique_names", None),
        ({"states": "FAILED"}, "states", "FAILED"),
        ({"states": ["DONE"]}, "states", "DONE"),
        ({"states": [3]}, "states", 3),
    ],
)
def test_work_query_rejects(fields: dict[str, Any], field: str, shown: object) -> None:
    expect_invalid(lambda: build(wm.WorkQuery, **fields), field, shown)


def test_work_query_rejects_a_bare_uuid() -> None:
    wid = uuid.uuid4()
    expect_invalid(lambda: build(wm.WorkQuery, ids=wid), "ids", wid)


def test_empty_work_query_is_an_error() -> None:
    with pytest.raises(wm.InvalidRequestError, match="at least one of") as info:
        wm.WorkQuery()
    assert info.value.field == "query"
    assert "query" in str(info.value)


# -- property tests

_SURROGATE_TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"])))
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included
    _SURROGATE_TEXT,
    st.binary(),
    st.uuids(),
    st.timedeltas(),
    st.sampled_from(
        [
            wm.Constraints(),
            wm.Constraints(requires_charging=True),
            wm.Backoff(),
            wm.OverwritingInputMerger,
            wm.ArrayCreatingInputMerger,
            CustomMerger,
            wm.WorkState.FAILED,
            int,
            _AN_OBJECT,
            "sync_feed",
        ]
    ),
)
_ANYTHING = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(_SURROGATE_TEXT, st.integers()), inner, max_size=4),
        st.frozensets(st.one_of(st.integers(), _SURROGATE_TEXT), max_size=4),
    ),
    max_leaves=12,
)
_REQUEST_FIELDS = [a.name for a in attrs.fields(wm.OneTimeWorkRequest)]


def construction_error(fields: dict[str, object]) -> wm.WorkManagerError | None:
    """Build a request; return its WorkManagerError, or None if it was accepted.

    Any other exception propagates and fails the calling test.
    """
    try:
        request(**fields)
    except wm.WorkManagerError as exc:
        return exc
    return None


@pytest.mark.parametrize("field", _REQUEST_FIELDS)
@settings(max_examples=150, deadline=None)
@given(value=_ANYTHING)
def test_any_value_for_a_request_field_is_accepted_or_named(field: str, value: object) -> None:
    err = construction_error({field: value})
    if err is not None:
        assert isinstance(err, wm.InvalidRequestError)
        assert err.field == field
        assert field in str(err)


@settings(max_examples=300, deadline=None)
@given(fields=st.fixed_dictionaries({}, optional=dict.fromkeys(_REQUEST_FIELDS, _ANYTHING)))
def test_any_combination_of_fields_is_accepted_or_named(fields: dict[str, object]) -> None:
    err = construction_error(fields)
    if err is not None:
        assert isinstance(err, wm.InvalidRequestError)
        assert err.field in fields
        assert err.field in str(err)


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(), inner, max_size=5)
    ),
    max_leaves=30,
)
_DATA = st.dictionaries(st.text(), _JSON, max_size=6)


@settings(max_examples=200, deadline=None)
@given(data=_DATA)
def test_json_input_round_trips(data: dict[str, Any]) -> None:
    req = wm.OneTimeWorkRequest("w", input=data)
    assert req.input == data
    assert wm.Result.success(data).output == data
    # and it is plain JSON a store can write
    assert json.loads(json.dumps(req.input, allow_nan=False)) == data


@settings(max_examples=100, deadline=None)
@given(seconds=st.floats(min_value=0, max_value=1e9))
def test_any_finite_non_negative_seconds_is_a_valid_delay(seconds: float) -> None:
    req = wm.OneTimeWorkRequest("w", initial_delay=seconds)
    assert math.isclose(req.initial_delay.total_seconds(), seconds, abs_tol=1e-6)


def test_max_attempts_has_an_upper_bound_stores_can_keep() -> None:
    with pytest.raises(wm.InvalidRequestError, match="max_attempts"):
        wm.OneTimeWorkRequest("w", max_attempts=2**70)
    assert wm.OneTimeWorkRequest("w", max_attempts=2**31 - 1).max_attempts == 2**31 - 1


@pytest.mark.parametrize("delay", [timedelta.max, timedelta(days=365 * 101), 1e12, -1e12])
def test_durations_are_bounded_so_stored_times_stay_valid(delay: object) -> None:
    with pytest.raises(wm.InvalidRequestError, match="initial_delay"):
        wm.OneTimeWorkRequest("w", initial_delay=delay)  # type: ignore[arg-type]
