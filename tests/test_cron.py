"""The 5-field cron module: parsing, Vixie day rules, month ends, and DST (semantics 4).

The DST tables are hand-written expectations (local times in the comments); the property
tests check random expressions against sets computed independently of the parser, and
against a brute-force oracle that walks every UTC minute around real DST transitions.
"""

from __future__ import annotations

import calendar
import functools
import math
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wm_async import InvalidRequestError
from wm_async._core.cron import (
    CronFields,
    CronSchedule,
)

MINUTE = timedelta(minutes=1)
ALL_MINUTES = frozenset(range(60))
ALL_HOURS = frozenset(range(24))
ALL_DAYS = frozenset(range(1, 32))
ALL_MONTHS = frozenset(range(1, 13))
ALL_DOWS = frozenset(range(7))

PROPERTY_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Apia",  # +13, DST abolished in 2021
]
DST_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Australia/Lord_Howe"]
START_2025 = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
END_2030 = datetime(2031, 1, 1, tzinfo=UTC).timestamp()


def utc(text: str) -> float:
    """Epoch seconds of a naive ISO time read as UTC ("2026-03-29T01:00")."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


def fires(expression: str, timezone: str, start: str, count: int) -> list[str]:
    """The next ``count`` fire times after ``start`` (UTC), as UTC ISO minutes."""
    schedule = CronSchedule.parse(expression, timezone)
    ts = utc(start)
    out = []
    for _ in range(count):
        ts = schedule.next_after(ts)
        out.append(iso(ts))
    return out


def fields(
    minutes: frozenset[int] = ALL_MINUTES,
    hours: frozenset[int] = ALL_HOURS,
    days_of_month: frozenset[int] = ALL_DAYS,
    months: frozenset[int] = ALL_MONTHS,
    days_of_week: frozenset[int] = ALL_DOWS,
    *,
    day_or: bool = False,
) -> CronFields:
    return CronFields(
        minutes=minutes,
        hours=hours,
        days_of_month=days_of_month,
        months=months,
        days_of_week=days_of_week,
        day_or=day_or,
    )


def fs(*values: int) -> frozenset[int]:
    return frozenset(values)


# -- parsing ---------------------------------------------------------------------------

VALID = [
    ("* * * * *", fields()),
    ("0 0 * * *", fields(fs(0), fs(0))),
    ("  5\t4  *  *  * ", fields(fs(5), fs(4))),
    ("05 07 * * *", fields(fs(5), fs(7))),
    ("0,15,30,45 * * * *", fields(fs(0, 15, 30, 45))),
    ("*/15 * * * *", fields(fs(0, 15, 30, 45))),
    ("*/60 * * * *", fields(fs(0))),
    ("5/20 * * * *", fields(fs(5, 25, 45))),
    ("10-20/5 * * * *", fields(fs(10, 15, 20))),
    ("10-21/5 * * * *", fields(fs(10, 15, 20))),
    ("59 23 31 12 6", fields(fs(59), fs(23), fs(31), fs(12), fs(6), day_or=True)),
    ("0 9-17 * * *", fields(fs(0), frozenset(range(9, 18)))),
    ("0 */6 * * *", fields(fs(0), fs(0, 6, 12, 18))),
    ("0 0 1,15 * *", fields(fs(0), fs(0), fs(1, 15))),
    ("0 0 */10 * *", fields(fs(0), fs(0), fs(1, 11, 21, 31))),
    ("0 0 * JAN-MAR,dec *", fields(fs(0), fs(0), months=fs(1, 2, 3, 12))),
    ("0 0 * jan,Feb,MAR *", fields(fs(0), fs(0), months=fs(1, 2, 3))),
    ("0 0 * */3 *", fields(fs(0), fs(0), months=fs(1, 4, 7, 10))),
    ("0 0 * 2/5 *", fields(fs(0), fs(0), months=fs(2, 7, 12))),
    ("0 0 * * MON-FRI", fields(fs(0), fs(0), days_of_week=fs(1, 2, 3, 4, 5))),
    ("0 0 * * sun,sat", fields(fs(0), fs(0), days_of_week=fs(0, 6))),
    ("0 0 * * 7", fields(fs(0), fs(0), days_of_week=fs(0))),
    ("0 0 * * 0", fields(fs(0), fs(0), days_of_week=fs(0))),
    ("0 0 * * 5-7", fields(fs(0), fs(0), days_of_week=fs(5, 6, 0))),
    ("0 0 * * 0-7", fields(fs(0), fs(0))),
    ("0 0 * * */2", fields(fs(0), fs(0), days_of_week=fs(0, 2, 4, 6))),
    ("0 0 * * 1/2", fields(fs(0), fs(0), days_of_week=fs(1, 3, 5, 0))),  # 1,3,5,7
    ("0 0 * * FRI-SAT/1", fields(fs(0), fs(0), days_of_week=fs(5, 6))),
    # Vixie: "restricted" means "does not start with *"
    ("0 0 13 * FRI", fields(fs(0), fs(0), fs(13), days_of_week=fs(5), day_or=True)),
    ("0 0 1-31 * MON", fields(fs(0), fs(0), days_of_week=fs(1), day_or=True)),
    ("0 0 */2 * FRI", fields(fs(0), fs(0), frozenset(range(1, 32, 2)), days_of_week=fs(5))),
    ("0 0 13 * */1", fields(fs(0), fs(0), fs(13))),
    ("0 0 31 2 MON", fields(fs(0), fs(0), fs(31), fs(2), fs(1), day_or=True)),  # Feb Mondays
    ("0 0 29 2 *", fields(fs(0), fs(0), fs(29), fs(2))),
    ("0 0 29 2 */7", fields(fs(0), fs(0), fs(29), fs(2), fs(0))),
    ("0 0 30,31 1-3 *", fields(fs(0), fs(0), fs(30, 31), fs(1, 2, 3))),
    ("@yearly", fields(fs(0), fs(0), fs(1), fs(1))),
    ("@annually", fields(fs(0), fs(0), fs(1), fs(1))),
    ("@monthly", fields(fs(0), fs(0), fs(1))),
    ("@weekly", fields(fs(0), fs(0), days_of_week=fs(0))),
    ("@daily", fields(fs(0), fs(0))),
    ("@midnight", fields(fs(0), fs(0))),
    ("@hourly", fields(fs(0))),
    (" @DAILY ", fields(fs(0), fs(0))),
]


@pytest.mark.parametrize(("expression", "expected"), VALID)
def test_valid_expressions(expression: str, expected: CronFields) -> None:
    schedule = CronSchedule.parse(expression)
    assert schedule.fields == expected
    assert schedule.expression == expression
    assert schedule.timezone == "UTC"


# (expression, cron field named in the reason or None, words the reason contains)
INVALID: list[tuple[object, str | None, str]] = [
    ("", None, "expected 5 fields"),
    ("   ", None, "got 0"),
    ("* * * *", None, "got 4"),
    ("0 0 * * * *", None, "seconds"),
    ("0 0 0 * * * 2026", None, "seconds and year"),
    ("60 * * * *", "minute", "out of range 0-59"),
    ("* 24 * * *", "hour", "out of range 0-23"),
    ("* * 0 * *", "day-of-month", "out of range 1-31"),
    ("* * 32 * *", "day-of-month", "out of range"),
    ("* * * 0 *", "month", "out of range 1-12"),
    ("* * * 13 *", "month", "out of range"),
    ("* * * * 8", "day-of-week", "out of range 0-7"),
    ("99999999999999999999 * * * *", "minute", "out of range"),
    ("1,,2 * * * *", "minute", "empty list item"),
    ("1, * * * *", "minute", "empty list item"),
    (",1 * * * *", "minute", "empty list item"),
    ("* * * * 1,", "day-of-week", "empty list item"),
    ("*/0 * * * *", "minute", "step 0"),
    ("5-10/0 * * * *", "minute", "step 0"),
    ("*/ * * * *", "minute", "not a positive number"),
    ("*/x * * * *", "minute", "not a positive number"),
    ("*/-1 * * * *", "minute", "not a positive number"),
    ("*/61 * * * *", "minute", "larger than the field's cycle"),
    ("0 */25 * * *", "hour", "larger than the field's cycle"),
    ("0 0 * * */8", "day-of-week", "larger than the field's cycle"),
    ("*/2/3 * * * *", "minute", "more than one '/'"),
    ("5-1 * * * *", "minute", "reversed range"),
    ("0 0 * DEC-JAN *", "month", "reversed range"),
    ("0 0 * * FRI-MON", "day-of-week", "reversed range"),
    ("1-2-3 * * * *", "minute", "not a range"),
    ("-1 * * * *", "minute", "value is missing"),
    ("1- * * * *", "minute", "value is missing"),
    ("*-5 * * * *", "minute", "'*' can only stand alone"),
    ("** * * * *", "minute", "not a number or a name"),
    ("1.5 * * * *", "minute", "not a number or a name"),
    ("+1 * * * *", "minute", "not a number or a name"),
    ("\u0663 * * * *", "minute", "not a number or a name"),  # ARABIC-INDIC DIGIT THREE
    ("0 0 * FOO *", "month", "unknown name 'FOO'"),
    ("0 0 * JAN-FOO *", "month", "unknown name"),
    ("0 0 * January *", "month", "unknown name"),
    ("0 0 * * MONDAY", "day-of-week", "unknown name"),
    ("0 0 * * MON-FOO", "day-of-week", "unknown name"),
    ("JAN * * * *", "minute", "names are not allowed"),
    ("0 0 MON * *", "day-of-month", "names are not allowed"),
    ("0 0 L * *", "day-of-month", "'L'/'W'"),
    ("0 0 LW * *", "day-of-month", "'L'/'W'"),
    ("0 0 15W * *", "day-of-month", "'L'/'W'"),
    ("0 0 * * 5L", "day-of-week", "'L'/'W'"),
    ("0 0 * * L", "day-of-week", "'L'/'W'"),
    ("0 0 * * 1#2", "day-of-week", "'#'"),
    ("0 0 ? * MON", "day-of-month", "'?'"),
    ("H * * * *", "minute", "'H'"),
    ("0 0 31 2 *", None, "can never fire"),
    ("0 0 30,31 2 *", None, "can never fire"),
    ("0 0 31 4,6,9,11 *", None, "can never fire"),
    ("0 0 31 2 */2", None, "can never fire"),  # '*/2' makes the day fields AND
    ("@reboot", None, "unknown alias"),
    ("@every 5m", None, "must stand alone"),
    ("@daily *", None, "must stand alone"),
    ("@", None, "unknown alias"),
    (5, None, "expected a cron expression string"),
    (None, None, "expected a cron expression string"),
    (b"* * * * *", None, "expected a cron expression string"),
]


@pytest.mark.parametrize(("expression", "cron_field", "reason"), INVALID)
def test_invalid_expressions(expression: object, cron_field: str | None, reason: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        CronSchedule.parse(expression, "UTC")  # type: ignore[arg-type]  # deliberately bad
    error = caught.value
    assert error.field == "cron"
    assert str(error).startswith("invalid cron=")
    assert reason in error.reason
    if cron_field is not None:
        assert error.reason.startswith(f"{cron_field} field ")
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("timezone", ["Mars/Base", "", "utc", "Europe", "/etc/passwd", "../x", 5])
def test_invalid_timezone(timezone: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        CronSchedule.parse("0 0 * * *", timezone)  # type: ignore[arg-type]  # deliberately bad
    assert caught.value.field == "timezone"
    assert "invalid timezone=" in str(caught.value)


def test_expression_is_checked_before_timezone() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        CronSchedule.parse("61 * * * *", "Mars/Base")
    assert caught.value.field == "cron"


def test_value_semantics() -> None:
    a = CronSchedule.parse("0 3 * * *", "Europe/Berlin")
    assert a == CronSchedule("0 3 * * *", "Europe/Berlin")
    assert hash(a) == hash(CronSchedule.parse("0 3 * * *", "Europe/Berlin"))
    assert a != CronSchedule.parse("0 3 * * *")
    assert repr(a) == "CronSchedule(expression='0 3 * * *', timezone='Europe/Berlin')"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.expression = "0 4 * * *"  # type: ignore[misc]
    with pytest.raises(InvalidRequestError):
        CronSchedule("0 0 31 2 *")  # direct construction validates too


# -- next_after basics -----------------------------------------------------------------


def test_next_after_is_strictly_after() -> None:
    schedule = CronSchedule.parse("0 3 * * *")
    fire = utc("2026-05-01T03:00")
    assert schedule.next_after(fire - 60) == fire
    assert schedule.next_after(fire - 0.5) == fire
    assert schedule.next_after(fire) == fire + 86_400
    assert schedule.next_after(fire + 0.5) == fire + 86_400
    assert isinstance(schedule.next_after(fire), float)
    every = CronSchedule.parse("* * * * *")
    assert every.next_after(fire) == fire + 60
    assert every.next_after(fire + 59.999) == fire + 60
    assert every.next_after(int(fire)) == fire + 60


def test_next_after_before_the_epoch_and_far_ahead() -> None:
    assert iso(CronSchedule.parse("0 0 1 1 *").next_after(utc("1969-06-01T00:00"))) == (
        "1970-01-01T00:00"
    )
    assert iso(
        CronSchedule.parse("@daily", "Europe/Berlin").next_after(utc("2500-06-01T12:00"))
    ) == (
        "2500-06-01T22:00"  # zoneinfo extends the current rules (CEST, +2)
    )


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf, True, "0"])
def test_next_after_rejects_non_finite(ts: object) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        CronSchedule.parse("* * * * *").next_after(ts)  # type: ignore[arg-type]  # bad on purpose
    assert caught.value.field == "ts"


def test_next_after_past_year_9999_raises() -> None:
    ts = utc("9999-12-31T12:00")
    with pytest.raises(InvalidRequestError) as caught:
        CronSchedule.parse("0 0 1 1 *").next_after(ts)
    assert caught.value.field == "ts"
    assert CronSchedule.parse("0 13 * * *").next_after(ts) == utc("9999-12-31T13:00")


# -- DST: hand-written expectations ----------------------------------------------------

# Europe/Berlin:   2026-03-29 01:00Z CET(+1)->CEST(+2), local 02:00-02:59 skipped;
#                  2026-10-25 01:00Z CEST->CET, local 02:00-02:59 repeated
#                  (first pass 00:00-00:59Z, second pass 01:00-01:59Z).
# America/New_York: 2026-03-08 07:00Z EST(-5)->EDT(-4), 02:00-02:59 skipped;
#                  2026-11-01 06:00Z EDT->EST, 01:00-01:59 repeated (05:xxZ then 06:xxZ).
# Australia/Sydney: 2026-04-04 16:00Z AEDT(+11)->AEST(+10), 02:00-02:59 on 04-05 repeated
#                  (15:xxZ then 16:xxZ); 2026-10-03 16:00Z AEST->AEDT, 02:00-02:59 on
#                  10-04 skipped.
DST_CASES = [
    # --- Berlin spring forward
    pytest.param(
        "Europe/Berlin",
        "30 2 * * *",
        "2026-03-27T12:00",
        [
            "2026-03-28T01:30",  # 02:30 CET
            "2026-03-29T01:00",  # 02:30 skipped -> 03:00 CEST, the end of the gap
            "2026-03-30T00:30",  # 02:30 CEST
            "2026-03-31T00:30",
        ],
        id="berlin-spring-0230",
    ),
    pytest.param(
        "Europe/Berlin",
        "0 * * * *",
        "2026-03-28T22:30",
        [
            "2026-03-28T23:00",  # 00:00 CET
            "2026-03-29T00:00",  # 01:00 CET
            "2026-03-29T01:00",  # 02:00 skipped and 03:00 CEST: one firing
            "2026-03-29T02:00",  # 04:00 CEST
            "2026-03-29T03:00",
        ],
        id="berlin-spring-hourly",
    ),
    pytest.param(
        "Europe/Berlin",
        "*/15 1-3 * * *",
        "2026-03-28T23:30",
        [
            "2026-03-29T00:00",  # 01:00 CET
            "2026-03-29T00:15",
            "2026-03-29T00:30",
            "2026-03-29T00:45",  # 01:45 CET
            "2026-03-29T01:00",  # 02:00-02:45 skipped, and 03:00 CEST: once
            "2026-03-29T01:15",  # 03:15 CEST
            "2026-03-29T01:30",
            "2026-03-29T01:45",
            "2026-03-29T23:00",  # 03-30 01:00 CEST
        ],
        id="berlin-spring-quarter-hours",
    ),
    pytest.param(
        "Europe/Berlin",
        "0 3 * * *",
        "2026-03-27T12:00",
        ["2026-03-28T02:00", "2026-03-29T01:00", "2026-03-30T01:00"],  # 03:00 CET, CEST, CEST
        id="berlin-spring-0300",
    ),
    pytest.param(
        "Europe/Berlin",
        "30 2 * * SUN",
        "2026-03-20T00:00",
        ["2026-03-22T01:30", "2026-03-29T01:00", "2026-04-05T00:30"],
        id="berlin-spring-weekly",
    ),
    # --- Berlin fall back
    pytest.param(
        "Europe/Berlin",
        "30 2 * * *",
        "2026-10-23T12:00",
        [
            "2026-10-24T00:30",  # 02:30 CEST
            "2026-10-25T00:30",  # 02:30 CEST, first pass; not 01:30Z (02:30 CET)
            "2026-10-26T01:30",  # 02:30 CET
        ],
        id="berlin-fall-0230",
    ),
    pytest.param(
        "Europe/Berlin",
        "0 * * * *",
        "2026-10-24T22:30",
        [
            "2026-10-24T23:00",  # 01:00 CEST
            "2026-10-25T00:00",  # 02:00 CEST; 01:00Z is 02:00 CET again: no firing
            "2026-10-25T02:00",  # 03:00 CET
            "2026-10-25T03:00",
        ],
        id="berlin-fall-hourly",
    ),
    pytest.param(
        "Europe/Berlin",
        "*/15 1-3 * * *",
        "2026-10-24T22:30",
        [
            "2026-10-24T23:00",  # 01:00 CEST
            "2026-10-24T23:15",
            "2026-10-24T23:30",
            "2026-10-24T23:45",
            "2026-10-25T00:00",  # 02:00 CEST (first pass)
            "2026-10-25T00:15",
            "2026-10-25T00:30",
            "2026-10-25T00:45",  # 02:45 CEST; the second pass 01:00-01:45Z is skipped
            "2026-10-25T02:00",  # 03:00 CET
            "2026-10-25T02:15",
            "2026-10-25T02:30",
            "2026-10-25T02:45",
            "2026-10-26T00:00",  # 10-26 01:00 CET
        ],
        id="berlin-fall-quarter-hours",
    ),
    pytest.param(
        "Europe/Berlin",
        "0 3 * * *",
        "2026-10-23T12:00",
        ["2026-10-24T01:00", "2026-10-25T02:00", "2026-10-26T02:00"],  # CEST, CET, CET
        id="berlin-fall-0300",
    ),
    pytest.param(
        "Europe/Berlin",
        "30 2 * * SUN",
        "2026-10-17T00:00",
        ["2026-10-18T00:30", "2026-10-25T00:30", "2026-11-01T01:30"],
        id="berlin-fall-weekly",
    ),
    pytest.param(
        "Europe/Berlin",
        "*/30 * * * *",
        "2026-10-24T23:40",
        [
            "2026-10-25T00:00",  # 02:00 CEST
            "2026-10-25T00:30",  # 02:30 CEST; 02:00 and 02:30 CET do not fire again
            "2026-10-25T02:00",  # 03:00 CET
            "2026-10-25T02:30",
        ],
        id="berlin-fall-half-hours",
    ),
    # --- New York spring forward
    pytest.param(
        "America/New_York",
        "30 2 * * *",
        "2026-03-06T12:00",
        ["2026-03-07T07:30", "2026-03-08T07:00", "2026-03-09T06:30"],  # EST, gap end, EDT
        id="new-york-spring-0230",
    ),
    pytest.param(
        "America/New_York",
        "0 * * * *",
        "2026-03-08T05:30",
        ["2026-03-08T06:00", "2026-03-08T07:00", "2026-03-08T08:00"],  # 01 EST, 03 EDT, 04
        id="new-york-spring-hourly",
    ),
    pytest.param(
        "America/New_York",
        "*/15 1-3 * * *",
        "2026-03-08T05:30",
        [
            "2026-03-08T06:00",  # 01:00 EST
            "2026-03-08T06:15",
            "2026-03-08T06:30",
            "2026-03-08T06:45",
            "2026-03-08T07:00",  # 02:00-02:45 skipped, and 03:00 EDT: once
            "2026-03-08T07:15",
            "2026-03-08T07:30",
            "2026-03-08T07:45",
            "2026-03-09T05:00",  # 03-09 01:00 EDT
        ],
        id="new-york-spring-quarter-hours",
    ),
    pytest.param(
        "America/New_York",
        "0 3 * * *",
        "2026-03-06T12:00",
        ["2026-03-07T08:00", "2026-03-08T07:00", "2026-03-09T07:00"],
        id="new-york-spring-0300",
    ),
    pytest.param(
        "America/New_York",
        "30 2 * * SUN",
        "2026-02-28T12:00",
        ["2026-03-01T07:30", "2026-03-08T07:00", "2026-03-15T06:30"],
        id="new-york-spring-weekly",
    ),
    # --- New York fall back (repeated hour is 01:00-01:59)
    pytest.param(
        "America/New_York",
        "30 2 * * *",
        "2026-10-30T12:00",
        ["2026-10-31T06:30", "2026-11-01T07:30", "2026-11-02T07:30"],  # EDT, EST, EST
        id="new-york-fall-0230",
    ),
    pytest.param(
        "America/New_York",
        "0 * * * *",
        "2026-11-01T03:30",
        [
            "2026-11-01T04:00",  # 00:00 EDT
            "2026-11-01T05:00",  # 01:00 EDT; 06:00Z is 01:00 EST again: no firing
            "2026-11-01T07:00",  # 02:00 EST
            "2026-11-01T08:00",
        ],
        id="new-york-fall-hourly",
    ),
    pytest.param(
        "America/New_York",
        "*/15 1-3 * * *",
        "2026-11-01T03:30",
        [
            "2026-11-01T05:00",  # 01:00 EDT (first pass)
            "2026-11-01T05:15",
            "2026-11-01T05:30",
            "2026-11-01T05:45",
            "2026-11-01T07:00",  # 02:00 EST
            "2026-11-01T07:15",
            "2026-11-01T07:30",
            "2026-11-01T07:45",
            "2026-11-01T08:00",  # 03:00 EST
            "2026-11-01T08:15",
            "2026-11-01T08:30",
            "2026-11-01T08:45",
            "2026-11-02T06:00",  # 11-02 01:00 EST
        ],
        id="new-york-fall-quarter-hours",
    ),
    pytest.param(
        "America/New_York",
        "0 3 * * *",
        "2026-10-30T12:00",
        ["2026-10-31T07:00", "2026-11-01T08:00", "2026-11-02T08:00"],
        id="new-york-fall-0300",
    ),
    pytest.param(
        "America/New_York",
        "30 1 * * SUN",
        "2026-10-24T12:00",
        ["2026-10-25T05:30", "2026-11-01T05:30", "2026-11-08T06:30"],  # EDT, first pass, EST
        id="new-york-fall-weekly",
    ),
    # --- Sydney: DST ends in April (repeated 02:00-02:59 on 04-05)
    pytest.param(
        "Australia/Sydney",
        "30 2 * * *",
        "2026-04-03T00:00",
        [
            "2026-04-03T15:30",  # 04-04 02:30 AEDT
            "2026-04-04T15:30",  # 04-05 02:30 AEDT, first pass; not 16:30Z (AEST)
            "2026-04-05T16:30",  # 04-06 02:30 AEST
        ],
        id="sydney-fall-0230",
    ),
    pytest.param(
        "Australia/Sydney",
        "0 * * * *",
        "2026-04-04T13:30",
        [
            "2026-04-04T14:00",  # 01:00 AEDT
            "2026-04-04T15:00",  # 02:00 AEDT; 16:00Z is 02:00 AEST again: no firing
            "2026-04-04T17:00",  # 03:00 AEST
            "2026-04-04T18:00",
        ],
        id="sydney-fall-hourly",
    ),
    pytest.param(
        "Australia/Sydney",
        "*/15 1-3 * * *",
        "2026-04-04T13:30",
        [
            "2026-04-04T14:00",  # 01:00 AEDT
            "2026-04-04T14:15",
            "2026-04-04T14:30",
            "2026-04-04T14:45",
            "2026-04-04T15:00",  # 02:00 AEDT
            "2026-04-04T15:15",
            "2026-04-04T15:30",
            "2026-04-04T15:45",  # 02:45 AEDT; second pass 16:00-16:45Z skipped
            "2026-04-04T17:00",  # 03:00 AEST
            "2026-04-04T17:15",
            "2026-04-04T17:30",
            "2026-04-04T17:45",
            "2026-04-05T15:00",  # 04-06 01:00 AEST
        ],
        id="sydney-fall-quarter-hours",
    ),
    pytest.param(
        "Australia/Sydney",
        "0 3 * * *",
        "2026-04-03T00:00",
        ["2026-04-03T16:00", "2026-04-04T17:00", "2026-04-05T17:00"],  # AEDT, AEST, AEST
        id="sydney-fall-0300",
    ),
    pytest.param(
        "Australia/Sydney",
        "30 2 * * SUN",
        "2026-03-27T00:00",
        ["2026-03-28T15:30", "2026-04-04T15:30", "2026-04-11T16:30"],
        id="sydney-fall-weekly",
    ),
    # --- Sydney: DST starts in October (02:00-02:59 on 10-04 skipped)
    pytest.param(
        "Australia/Sydney",
        "30 2 * * *",
        "2026-10-02T00:00",
        [
            "2026-10-02T16:30",  # 10-03 02:30 AEST
            "2026-10-03T16:00",  # 10-04 02:30 skipped -> 03:00 AEDT
            "2026-10-04T15:30",  # 10-05 02:30 AEDT
        ],
        id="sydney-spring-0230",
    ),
    pytest.param(
        "Australia/Sydney",
        "0 * * * *",
        "2026-10-03T13:30",
        ["2026-10-03T14:00", "2026-10-03T15:00", "2026-10-03T16:00", "2026-10-03T17:00"],
        id="sydney-spring-hourly",
    ),
    pytest.param(
        "Australia/Sydney",
        "*/15 1-3 * * *",
        "2026-10-03T14:30",
        [
            "2026-10-03T15:00",  # 01:00 AEST
            "2026-10-03T15:15",
            "2026-10-03T15:30",
            "2026-10-03T15:45",
            "2026-10-03T16:00",  # 02:00-02:45 skipped, and 03:00 AEDT: once
            "2026-10-03T16:15",
            "2026-10-03T16:30",
            "2026-10-03T16:45",
            "2026-10-04T14:00",  # 10-05 01:00 AEDT
        ],
        id="sydney-spring-quarter-hours",
    ),
    pytest.param(
        "Australia/Sydney",
        "0 3 * * *",
        "2026-10-02T00:00",
        ["2026-10-02T17:00", "2026-10-03T16:00", "2026-10-04T16:00"],
        id="sydney-spring-0300",
    ),
    pytest.param(
        "Australia/Sydney",
        "30 2 * * SUN",
        "2026-09-25T00:00",
        ["2026-09-26T16:30", "2026-10-03T16:00", "2026-10-10T15:30"],
        id="sydney-spring-weekly",
    ),
    # --- Lord Howe: 30-minute DST. 2026-04-04 15:00Z 02:00 (+11) -> 01:30 (+10:30);
    #     2026-10-03 15:30Z 02:00 (+10:30) -> 02:30 (+11).
    pytest.param(
        "Australia/Lord_Howe",
        "*/30 * * * *",
        "2026-04-04T13:45",
        [
            "2026-04-04T14:00",  # 01:00 +11
            "2026-04-04T14:30",  # 01:30 +11; 15:00Z is 01:30 +10:30 again: no firing
            "2026-04-04T15:30",  # 02:00 +10:30
            "2026-04-04T16:00",
        ],
        id="lord-howe-fall-half-hours",
    ),
    pytest.param(
        "Australia/Lord_Howe",
        "0 2 * * *",
        "2026-10-02T12:00",
        [
            "2026-10-02T15:30",  # 10-03 02:00 +10:30
            "2026-10-03T15:30",  # 10-04 02:00 skipped -> 02:30 +11
            "2026-10-04T15:00",  # 10-05 02:00 +11
        ],
        id="lord-howe-spring-0200",
    ),
    # --- Apia skipped all of 2011-12-30 (-10 -> +14 at 2011-12-30 10:00Z)
    pytest.param(
        "Pacific/Apia",
        "0 12 * * *",
        "2011-12-29T12:00",
        [
            "2011-12-29T22:00",  # 12-29 12:00 -10
            "2011-12-30T10:00",  # 12-30 12:00 never happened -> 12-31 00:00 +14
            "2011-12-30T22:00",  # 12-31 12:00 +14
        ],
        id="apia-skipped-day",
    ),
]


@pytest.mark.parametrize(("timezone", "expression", "start", "expected"), DST_CASES)
def test_dst_transitions(timezone: str, expression: str, start: str, expected: list[str]) -> None:
    assert fires(expression, timezone, start, len(expected)) == expected


def test_dst_gap_fires_once_for_every_start_inside_the_run_up() -> None:
    """Whatever ``ts`` before the gap, the skipped 02:xx times fire once, at 01:00Z."""
    schedule = CronSchedule.parse("*/15 2 * * *", "Europe/Berlin")
    gap_end = utc("2026-03-29T01:00")
    for minutes_before in (1, 14, 15, 16, 59, 60, 61, 600):
        assert schedule.next_after(gap_end - 60 * minutes_before) == gap_end
    assert iso(schedule.next_after(gap_end)) == "2026-03-30T00:00"  # 02:00 CEST next day


def test_second_pass_of_a_repeated_hour_does_not_fire() -> None:
    """Asked from inside the second pass (01:00-02:00Z = 02:xx CET), the next firing is
    after the repeated hour, not the second occurrence of a wall time."""
    every_half_hour = CronSchedule.parse("*/30 * * * *", "Europe/Berlin")
    at_0230 = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    every_minute = CronSchedule.parse("* * * * *", "Europe/Berlin")
    for ts in ("2026-10-25T01:00", "2026-10-25T01:10", "2026-10-25T01:30", "2026-10-25T01:59"):
        assert iso(every_half_hour.next_after(utc(ts))) == "2026-10-25T02:00"
        assert iso(at_0230.next_after(utc(ts))) == "2026-10-26T01:30"
        assert iso(every_minute.next_after(utc(ts))) == "2026-10-25T02:00"
    # the last minute of the first pass moves straight on to 03:00 CET
    assert iso(every_minute.next_after(utc("2026-10-25T00:59"))) == "2026-10-25T02:00"
    assert iso(every_minute.next_after(utc("2026-10-25T00:58:30"))) == "2026-10-25T00:59"


# -- day rules, month ends, leap years -------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # 13th OR Friday (both restricted)
        ("0 0 13 * 5", ["03-06", "03-13", "03-20", "03-27", "04-03", "04-10", "04-13", "04-17"]),
        ("0 0 13 * FRI", ["03-06", "03-13", "03-20", "03-27", "04-03", "04-10", "04-13", "04-17"]),
        # 1st, 15th OR Monday (2026-03-15 is a Sunday, 04-01 a Wednesday)
        ("0 0 1,15 * MON", ["03-02", "03-09", "03-15", "03-16", "03-23", "03-30", "04-01"]),
        # "1-31" does not start with '*', so it is restricted: every day (OR)
        ("0 0 1-31 * MON", ["03-02", "03-03", "03-04", "03-05"]),
        # day-of-month starts with '*': AND, so odd days that are Fridays
        ("0 0 */2 * FRI", ["03-13", "03-27", "04-03", "04-17", "05-01", "05-15"]),
        # day-of-week starts with '*': AND with the 13th
        ("0 0 13 * */1", ["03-13", "04-13", "05-13"]),
        ("0 0 13 * *", ["03-13", "04-13", "05-13"]),
        ("0 0 * * FRI", ["03-06", "03-13", "03-20"]),
        ("0 0 * * */2", ["03-03", "03-05", "03-07", "03-08", "03-10"]),  # Tue Thu Sat Sun
        # OR lets an impossible day-of-month stand beside a weekday: Mondays in February
        ("0 0 31 2 MON", ["2027-02-01", "2027-02-08", "2027-02-15", "2027-02-22"]),
    ],
)
def test_day_of_month_and_day_of_week(expression: str, expected: list[str]) -> None:
    got = fires(expression, "UTC", "2026-03-01T00:00", len(expected))
    width = len(expected[0])
    assert [g[5 : 5 + width] if width == 5 else g[:width] for g in got] == expected
    assert all(g.endswith("T00:00") for g in got)


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        ("0 0 29 2 *", "2026-03-01T00:00", ["2028-02-29", "2032-02-29", "2036-02-29"]),
        ("0 0 29 2 *", "2096-03-01T00:00", ["2104-02-29"]),  # 2100 is not a leap year
        ("0 0 29 2 *", "2399-01-01T00:00", ["2400-02-29"]),  # 2400 is
        (
            "0 0 31 * *",
            "2026-01-31T00:00",
            ["2026-03-31", "2026-05-31", "2026-07-31", "2026-08-31", "2026-10-31"],
        ),
        ("0 0 30 * *", "2026-01-30T00:00", ["2026-03-30", "2026-04-30"]),
        ("0 0 29 * *", "2027-01-29T00:00", ["2027-03-29"]),
        ("0 0 29 * *", "2028-01-29T00:00", ["2028-02-29", "2028-03-29"]),
        ("0 0 30,31 2,4 *", "2026-01-01T00:00", ["2026-04-30", "2027-04-30"]),
        ("59 23 31 12 *", "2026-06-01T00:00", ["2026-12-31", "2027-12-31"]),
        ("0 0 1 1 *", "2026-12-31T23:59", ["2027-01-01"]),
    ],
)
def test_month_ends_and_leap_years(expression: str, start: str, expected: list[str]) -> None:
    assert [g[:10] for g in fires(expression, "UTC", start, len(expected))] == expected


def test_rare_but_possible_schedule() -> None:
    """Feb 29 on a Sunday (AND rule): decades apart, still found and not rejected."""
    schedule = CronSchedule.parse("0 0 29 2 */7")
    ts = utc("2026-01-01T00:00")
    expected = [
        y for y in range(2026, 2200) if calendar.isleap(y) and date(y, 2, 29).weekday() == 6
    ]
    got = []
    for _ in range(4):
        ts = schedule.next_after(ts)
        got.append(datetime.fromtimestamp(ts, UTC).year)
    assert got == expected[:4]
    assert expected[3] - expected[2] == 40  # 2088 -> 2128 straddles 2100


# -- property tests --------------------------------------------------------------------


@attrs.frozen
class Expected:
    """An expression generated with its matching sets, computed without the parser."""

    text: str
    sets: CronFields

    def never_fires(self) -> bool:
        f = self.sets
        if f.day_or:
            return False
        return not any(
            d <= calendar.monthrange(2024, m)[1] for m in f.months for d in f.days_of_month
        )

    def matches(self, local: datetime) -> bool:
        f = self.sets
        dom = local.day in f.days_of_month
        dow = (local.weekday() + 1) % 7 in f.days_of_week
        return (
            local.minute in f.minutes
            and local.hour in f.hours
            and local.month in f.months
            and ((dom or dow) if f.day_or else (dom and dow))
        )


MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DOW_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


@st.composite
def field_text(
    draw: st.DrawFn, low: int, high: int, cycle: int, names: list[str], name_base: int
) -> tuple[str, frozenset[int]]:
    """One field: 1-3 comma-separated items and the values they denote."""

    def token(value: int) -> str:
        index = value - name_base
        if names and 0 <= index < len(names) and draw(st.booleans()):
            name = names[index]
            return draw(st.sampled_from([name, name.lower(), name.capitalize()]))
        return str(value)

    items: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["star", "value", "value", "range", "step"]))
        if kind == "star":
            items.append("*")
            values.update(range(low, high + 1))
            continue
        first = draw(st.integers(low, high))
        if kind == "value":
            items.append(token(first))
            values.add(first)
            continue
        last = draw(st.integers(first, high))
        if kind == "range":
            items.append(f"{token(first)}-{token(last)}")
            values.update(range(first, last + 1))
            continue
        step = draw(st.integers(1, cycle))
        base = draw(st.sampled_from(["*", "open", "range"]))
        if base == "*":
            items.append(f"*/{step}")
            values.update(range(low, high + 1, step))
        elif base == "open":
            items.append(f"{token(first)}/{step}")
            values.update(range(first, high + 1, step))
        else:
            items.append(f"{token(first)}-{token(last)}/{step}")
            values.update(range(first, last + 1, step))
    return ",".join(items), frozenset(values)


def star_or(
    strategy: st.SearchStrategy[tuple[str, frozenset[int]]],
) -> st.SearchStrategy[tuple[str, frozenset[int] | None]]:
    """A plain '*' (``None``: every value) or the given field strategy."""
    return st.one_of(st.just(("*", None)), strategy)


@st.composite
def expressions(draw: st.DrawFn) -> Expected:
    """A random valid-syntax expression; day and month fields lean towards '*' so that
    most expressions fire often enough to meet DST transitions."""
    minute, minutes = draw(field_text(0, 59, 60, [], 0))
    hour, hours = draw(field_text(0, 23, 24, [], 0))
    dom, doms = draw(star_or(field_text(1, 31, 31, [], 1)))
    month, months = draw(star_or(field_text(1, 12, 12, MONTH_NAMES, 1)))
    dow, dows = draw(star_or(field_text(0, 7, 7, DOW_NAMES, 0)))
    return Expected(
        text=f"{minute} {hour} {dom} {month} {dow}",
        sets=CronFields(
            minutes=minutes,
            hours=hours,
            days_of_month=doms if doms is not None else ALL_DAYS,
            months=months if months is not None else ALL_MONTHS,
            days_of_week=frozenset(d % 7 for d in dows) if dows is not None else ALL_DOWS,
            day_or=not dom.startswith("*") and not dow.startswith("*"),
        ),
    )


@functools.cache
def transitions(timezone: str) -> tuple[float, ...]:
    """The UTC instants in 2025-2030 at which ``timezone``'s offset changes."""
    tz = ZoneInfo(timezone)

    def offset(ts: float) -> timedelta | None:
        return datetime.fromtimestamp(ts, tz).utcoffset()

    found = []
    ts = START_2025
    while ts < END_2030:
        if offset(ts) != offset(ts + 86_400):
            lo, hi = ts, ts + 86_400
            while hi - lo > 60:
                mid = lo + (hi - lo) // 120 * 60
                lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
            found.append(hi)
        ts += 86_400
    return tuple(found)


def test_transitions_helper_finds_the_2026_changes() -> None:
    assert [iso(t) for t in transitions("Europe/Berlin") if iso(t).startswith("2026")] == [
        "2026-03-29T01:00",
        "2026-10-25T01:00",
    ]
    assert len(transitions("Australia/Lord_Howe")) == 12
    assert transitions("Asia/Kolkata") == transitions("Pacific/Apia") == ()


@st.composite
def timestamps(draw: st.DrawFn, timezone: str) -> float:
    """A time in 2025-2030, often within a day of one of the zone's DST changes."""
    near = transitions(timezone)
    if len(near) > 0 and draw(st.booleans()):
        centre = draw(st.sampled_from(near))
        return centre + draw(st.integers(-86_400, 86_400)) + draw(st.sampled_from([0, 0.5]))
    return draw(st.floats(START_2025, END_2030, allow_nan=False))


def local_of(ts: float, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ts, tz).replace(tzinfo=None)


def skipped_before(ts: float, tz: ZoneInfo) -> Iterator[datetime]:
    """The local minutes a forward jump skipped just before ``ts`` (none if no jump)."""
    wall = local_of(ts - 60, tz) + MINUTE
    end = local_of(ts, tz)
    while wall < end:
        yield wall
        wall += MINUTE


@settings(max_examples=400, deadline=None)
@given(expressions())
def test_parse_random_expressions(expected: Expected) -> None:
    if expected.never_fires():
        with pytest.raises(InvalidRequestError, match="can never fire"):
            CronSchedule.parse(expected.text)
    else:
        assert CronSchedule.parse(expected.text).fields == expected.sets


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expected=expressions(), timezone=st.sampled_from(PROPERTY_ZONES), data=st.data())
def test_next_after_properties(expected: Expected, timezone: str, data: st.DataObject) -> None:
    assume(not expected.never_fires())
    schedule = CronSchedule.parse(expected.text, timezone)
    tz = ZoneInfo(timezone)
    ts = data.draw(timestamps(timezone), label="ts")
    results: list[float] = []
    for _ in range(50):
        result = schedule.next_after(ts)
        assert result > ts
        assert result % 60 == 0
        ts = result
        results.append(result)
        local = local_of(result, tz)
        assert expected.matches(local) or any(
            expected.matches(wall) for wall in skipped_before(result, tz)
        ), f"{iso(result)} ({local} local) does not match {expected.text!r}"
    assert results == sorted(set(results))  # strictly increasing
    walls = [local_of(r, tz) for r in results]
    assert len(set(walls)) == len(walls), "a local wall-clock time fired twice"


def oracle(expected: Expected, tz: ZoneInfo, start: float, end: float) -> list[float]:
    """Brute force: walk every UTC minute in (start, end] and apply the documented rule
    directly -- a matching local time fires at its first occurrence (fold 0), and a
    forward jump fires once at its end if any skipped minute matches."""
    out = []
    ts = (math.floor(start / 60) + 1) * 60.0
    while ts <= end:
        moment = datetime.fromtimestamp(ts, tz)
        first_pass = moment.fold == 0 and expected.matches(moment.replace(tzinfo=None))
        if first_pass or any(expected.matches(w) for w in skipped_before(ts, tz)):
            out.append(ts)
        ts += 60
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expected=expressions(), timezone=st.sampled_from(DST_ZONES), data=st.data())
def test_next_after_agrees_with_brute_force_around_dst(
    expected: Expected, timezone: str, data: st.DataObject
) -> None:
    assume(not expected.never_fires())
    centre = data.draw(st.sampled_from(transitions(timezone)), label="transition")
    start = centre - data.draw(st.integers(0, 26 * 3600), label="lead") + 0.25
    end = start + 28 * 3600
    tz = ZoneInfo(timezone)
    schedule = CronSchedule.parse(expected.text, timezone)
    got = []
    ts = schedule.next_after(start)
    while ts <= end:
        got.append(ts)
        ts = schedule.next_after(ts)
    assert got == oracle(expected, tz, start, end)


@pytest.mark.parametrize("timezone", DST_ZONES)
@pytest.mark.parametrize("expression", ["* * * * *", "*/7 0-4 * * *", "0,30 * * * *"])
def test_brute_force_every_transition(timezone: str, expression: str) -> None:
    """Deterministic sweep: every 2025-2030 transition, against the oracle."""
    tz = ZoneInfo(timezone)
    cron = CronSchedule.parse(expression, timezone)
    expected = Expected(expression, cron.fields)
    for centre in transitions(timezone):
        start, end = centre - 3 * 3600, centre + 3 * 3600
        got = []
        ts = cron.next_after(start)
        while ts <= end:
            got.append(ts)
            ts = cron.next_after(ts)
        assert got == oracle(expected, tz, start, end), iso(centre)


# -- speed -----------------------------------------------------------------------------


def per_call(schedule: CronSchedule, start: float, calls: int) -> float:
    """Average seconds per next_after while iterating ``calls`` times from ``start``."""
    ts = start
    began = time.perf_counter()
    for _ in range(calls):
        ts = schedule.next_after(ts)
    return (time.perf_counter() - began) / calls


def test_next_after_is_fast() -> None:
    """Generous bounds (CI machines vary); typical calls take microseconds."""
    start = utc("2026-01-01T00:00")
    for expression in ("0 3 * * *", "*/15 1-3 * * *", "30 2 * * SUN", "0 0 1 * *"):
        assert per_call(CronSchedule.parse(expression, "Europe/Berlin"), start, 500) < 1e-3
    # a sparse schedule jumps whole months and days instead of scanning minutes
    assert per_call(CronSchedule.parse("0 0 29 2 *", "Europe/Berlin"), start, 50) < 2e-3
    # the rarest kind: years between firings, 40 around 2100
    assert per_call(CronSchedule.parse("59 23 29 2 */7", "Europe/Berlin"), start, 5) < 0.05
