"""Five-field cron schedules read in an IANA timezone, safe across DST changes.

A small, dependency-free parser and next-fire-time calculator for
``PeriodicWorkRequest(cron=..., timezone=...)`` (semantics 4).

Syntax
======

Five whitespace-separated fields::

    minute  hour  day-of-month  month  day-of-week
    0-59    0-23  1-31          1-12   0-7 (0 and 7 are Sunday)
                                JAN-DEC SUN-SAT (names are case-insensitive)

Each field is a comma-separated list of items; an item is ``*``, a value ``a``, a range
``a-b`` (``a <= b``), or one of these with a step: ``*/n``, ``a-b/n``, ``a/n`` (``a/n``
means ``a-<field maximum>/n``; the day-of-week maximum is 7, so ``1/2`` is Monday,
Wednesday, Friday and Sunday). A step is 1 up to the field's cycle length (60, 24, 31,
12, 7); larger steps can only select the start value, so they are rejected as a likely
mistake (``*/90`` in the minute field does not mean "every 90 minutes").

The aliases ``@yearly`` / ``@annually`` (``0 0 1 1 *``), ``@monthly`` (``0 0 1 * *``),
``@weekly`` (``0 0 * * 0``), ``@daily`` / ``@midnight`` (``0 0 * * *``) and ``@hourly``
(``0 * * * *``) are accepted. Everything else is rejected with
:class:`~wm_async.InvalidRequestError` (field ``"cron"``, the reason naming the cron
field and the problem): a seconds or year field, ``@reboot``, the Quartz/Jenkins
extensions ``L``, ``W``, ``#``, ``?`` and ``H``, out-of-range values, empty items, step 0,
reversed (wrap-around) ranges, unknown names, and expressions that can never fire such
as ``0 0 31 2 *``.

Day matching follows Vixie cron (crontab(5)): if the day-of-month and day-of-week fields
are both *restricted* -- neither starts with ``*`` -- a day matches when EITHER matches
(``0 0 13 * FRI`` is every 13th and every Friday). Otherwise both must match, so
``0 0 */2 * FRI`` is the Fridays that fall on an odd day of the month.

Time semantics (wall clock, DST)
================================

The expression is matched against local wall-clock minutes in ``timezone`` (zoneinfo).
Every matching local minute ``W`` is mapped to exactly one instant ``f(W)``:

1. ``W`` occurs once: its instant.
2. ``W`` occurs twice because the clocks go back (fall-back overlap): its FIRST
   occurrence only (``fold=0``). The second pass through the repeated wall-clock times
   never fires, whatever the schedule: ``30 2 * * *`` in Europe/Berlin on 2026-10-25
   fires at 00:30 UTC only, and ``0 * * * *`` fires at 00:00 UTC (02:00 CEST), not at
   01:00 UTC (02:00 CET, the same wall time again), then at 02:00 UTC (03:00 CET). An
   hourly schedule therefore has a two-hour UTC gap on that night.
3. ``W`` does not occur because the clocks jump forward (spring-forward gap): the
   transition instant, i.e. the first valid instant after the gap, whose local time is
   the end of the gap. ``30 2 * * *`` in Europe/Berlin on 2026-03-29 fires at 03:00 CEST
   (01:00 UTC). All matching minutes skipped by one gap collapse into this single
   firing, which is also the firing of the gap's end time if that matches too:
   ``*/15 2-3 * * *`` fires once at 03:00 CEST for 02:00-02:45, then at 03:15.

The fire times are the set of these instants, and :meth:`CronSchedule.next_after`
returns the least one strictly after its argument. ``f`` never decreases as ``W``
increases, so fire times follow wall-clock order, and no local wall-clock time is ever
fired twice. Fire times are whole local minutes; they are whole UTC minutes too because
every zone's UTC offset has been a whole number of minutes since 1972 (before that some
zones used local mean time, e.g. +00:53:28, and the instants carry those seconds).

This deliberately differs from Debian/Vixie cron, which fires ``*``-hour jobs in both
passes of a repeated hour: a durable work should not run twice for one wall-clock slot.

Cost: :meth:`~CronSchedule.next_after` jumps over non-matching months, days, hours and
minutes (never scanning minute by minute) and uses a few zoneinfo conversions, plus a
binary search over at most a day of seconds only when it lands on a DST change. Any
schedule that can fire does so within one 400-year Gregorian cycle, which bounds the
search.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from .errors import InvalidRequestError

__all__ = ["CronFields", "CronSchedule"]

_MONTH_NAMES: Final[Mapping[str, int]] = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_DOW_NAMES: Final[Mapping[str, int]] = {
    name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))
}
_NO_NAMES: Final[Mapping[str, int]] = {}

_ALIASES: Final[Mapping[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: Longest day-of-month for each month in any year (February: 29).
_MAX_DAYS: Final = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: Every date (February 29 included) falls on every weekday within one Gregorian cycle.
_SEARCH_YEARS: Final = 401
#: Defensive bound on re-searches in ``next_after`` (each one moves strictly forward).
_MAX_RETRIES: Final = 10_000

_NUMBER: Final = re.compile(r"[0-9]+")
_NAME: Final = re.compile(r"[A-Za-z]+")
_EXTENSION: Final = re.compile(r"[0-9]*(?:L|W|LW)", re.IGNORECASE)
_MINUTE: Final = timedelta(minutes=1)


@attrs.frozen
class _FieldSpec:
    """Bounds and names of one cron field."""

    name: str
    low: int
    high: int
    cycle: int  # largest step accepted
    names: Mapping[str, int]


_FIELD_SPECS: Final = (
    _FieldSpec("minute", 0, 59, 60, _NO_NAMES),
    _FieldSpec("hour", 0, 23, 24, _NO_NAMES),
    _FieldSpec("day-of-month", 1, 31, 31, _NO_NAMES),
    _FieldSpec("month", 1, 12, 12, _MONTH_NAMES),
    _FieldSpec("day-of-week", 0, 7, 7, _DOW_NAMES),
)


@attrs.frozen(kw_only=True)
class CronFields:
    """The matching sets a cron expression denotes.

    :ivar minutes: minutes 0-59
    :ivar hours: hours 0-23
    :ivar days_of_month: days 1-31
    :ivar months: months 1-12
    :ivar days_of_week: weekdays 0-6, Sunday = 0 (7 is folded into 0)
    :ivar day_or: True when both day fields are restricted (neither starts with ``*``),
        so a day matches if either matches (Vixie rule); False when both must match
    """

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    day_or: bool


def _reject(expression: object, reason: str) -> InvalidRequestError:
    return InvalidRequestError("cron", expression, reason)


class _FieldError(Exception):
    """A problem in one field; turned into an InvalidRequestError naming the field."""


def _value(spec: _FieldSpec, token: str) -> int:
    """One value of a field: a number in range, or a name the field allows."""
    if _NUMBER.fullmatch(token):
        number = int(token) if len(token) <= 9 else spec.high + 1
        if not spec.low <= number <= spec.high:
            raise _FieldError(f"value {token} is out of range {spec.low}-{spec.high}")
        return number
    if token == "":
        raise _FieldError("a value is missing")
    if token == "*":
        raise _FieldError("'*' can only stand alone or before a step ('*/n')")
    if token == "?":
        raise _FieldError("'?' (a Quartz extension) is not supported; use '*'")
    if token.upper() == "H":
        raise _FieldError("'H' (a Jenkins extension) is not supported")
    if _NAME.fullmatch(token):
        named = spec.names.get(token.upper())
        if named is not None:
            return named
        if _EXTENSION.fullmatch(token):
            raise _FieldError(f"{token!r}: the 'L'/'W' extensions are not supported")
        if spec.names:
            allowed = ", ".join(spec.names)
            raise _FieldError(f"unknown name {token!r} (expected a number or one of {allowed})")
        raise _FieldError(f"{token!r} is not a number (names are not allowed here)")
    if _EXTENSION.fullmatch(token):
        raise _FieldError(f"{token!r}: the 'L'/'W' extensions are not supported")
    raise _FieldError(f"{token!r} is not a number or a name")


def _item(spec: _FieldSpec, item: str) -> range:
    """The values one comma-separated item denotes."""
    if item == "":
        raise _FieldError("empty list item (stray ',')")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if "/" in step_text:
            raise _FieldError(f"{item!r} has more than one '/'")
        if not _NUMBER.fullmatch(step_text):
            raise _FieldError(f"step {step_text!r} in {item!r} is not a positive number")
        step = int(step_text) if len(step_text) <= 9 else spec.cycle + 1
        if step == 0:
            raise _FieldError(f"step 0 in {item!r}")
        if step > spec.cycle:
            raise _FieldError(
                f"step {step} in {item!r} is larger than the field's cycle ({spec.cycle}); "
                "cron cannot express intervals longer than that"
            )
    if base == "*":
        return range(spec.low, spec.high + 1, step)
    first_text, dash, last_text = base.partition("-")
    first = _value(spec, first_text)
    if not dash:
        return range(first, (spec.high if slash else first) + 1, step)
    if "-" in last_text:
        raise _FieldError(f"{item!r} is not a range a-b")
    last = _value(spec, last_text)
    if last < first:
        raise _FieldError(f"reversed range {base!r} (wrap-around ranges are not supported)")
    return range(first, last + 1, step)


def _field(spec: _FieldSpec, text: str) -> frozenset[int]:
    """The set of values a whole field denotes."""
    if "#" in text:
        raise _FieldError("the '#' (nth weekday) extension is not supported")
    values: set[int] = set()
    for item in text.split(","):
        values.update(_item(spec, item))
    if spec.name == "day-of-week":
        return frozenset(v % 7 for v in values)
    return frozenset(values)


def _compile(expression: object) -> CronFields:
    """Parse an expression into its matching sets, or raise InvalidRequestError."""
    if not isinstance(expression, str):
        raise _reject(expression, "expected a cron expression string")
    parts = expression.split()
    if len(parts) == 1 and parts[0].startswith("@"):
        alias = _ALIASES.get(parts[0].lower())
        if alias is None:
            known = ", ".join(_ALIASES)
            raise _reject(expression, f"unknown alias {parts[0]!r} (expected one of {known})")
        parts = alias.split()
    elif parts and parts[0].startswith("@"):
        raise _reject(expression, f"alias {parts[0]!r} must stand alone")
    if len(parts) != 5:
        hint = ""
        if len(parts) == 6:
            hint = "; seconds (or year) fields are not supported"
        elif len(parts) == 7:
            hint = "; seconds and year fields are not supported"
        raise _reject(
            expression,
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(parts)}{hint}",
        )
    sets: list[frozenset[int]] = []
    for spec, text in zip(_FIELD_SPECS, parts, strict=True):
        try:
            sets.append(_field(spec, text))
        except _FieldError as exc:
            raise _reject(expression, f"{spec.name} field {text!r}: {exc}") from None
    minutes, hours, doms, months, dows = sets
    day_or = not parts[2].startswith("*") and not parts[4].startswith("*")
    if not day_or and not any(d <= _MAX_DAYS[m] for m in months for d in doms):
        # Both day fields must match and no chosen month has any chosen day. Otherwise
        # it fires: with the OR rule every month has every weekday, and each valid
        # (month, day) falls on every weekday within a 400-year Gregorian cycle.
        raise _reject(
            expression, "can never fire: no chosen month has any of the chosen days of month"
        )
    return CronFields(
        minutes=minutes,
        hours=hours,
        days_of_month=doms,
        months=months,
        days_of_week=dows,
        day_or=day_or,
    )


def _zone(timezone: object) -> ZoneInfo:
    if not isinstance(timezone, str):
        raise InvalidRequestError("timezone", timezone, "expected an IANA timezone name")
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidRequestError("timezone", timezone, "unknown IANA timezone") from None


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return _MAX_DAYS[month]


class _OutOfRange(Exception):
    """The search left the years ``datetime`` can represent (or the search horizon)."""


@attrs.frozen
class CronSchedule:
    """A parsed 5-field cron expression read in an IANA timezone.

    Build with :meth:`parse` (or ``CronSchedule(expression, timezone)``); both validate.
    Equal when the expression text and timezone are equal.

    :ivar expression: the cron expression, as given
    :ivar timezone: the IANA timezone it is read in
    """

    expression: str
    timezone: str = "UTC"
    _fields: CronFields = attrs.field(init=False, eq=False, repr=False)
    _tz: ZoneInfo = attrs.field(init=False, eq=False, repr=False)
    _minutes: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)
    _hours: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)
    _doms: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)
    _months: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)
    #: For each weekday (Sunday = 0): days until the next allowed weekday (0 if allowed).
    _dow_skip: tuple[int, ...] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        fields = _compile(self.expression)
        setattr_ = object.__setattr__
        setattr_(self, "_fields", fields)
        setattr_(self, "_tz", _zone(self.timezone))
        setattr_(self, "_minutes", tuple(sorted(fields.minutes)))
        setattr_(self, "_hours", tuple(sorted(fields.hours)))
        setattr_(self, "_doms", tuple(sorted(fields.days_of_month)))
        setattr_(self, "_months", tuple(sorted(fields.months)))
        dows = fields.days_of_week
        skip = tuple(
            next(k for k in range(7) if (weekday + k) % 7 in dows) for weekday in range(7)
        )
        setattr_(self, "_dow_skip", skip)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """Parse ``expression`` read in ``timezone``.

        :raises InvalidRequestError: field ``"cron"`` for a bad expression (the reason
            names the cron field and the problem), ``"timezone"`` for an unknown zone
        """
        return cls(expression, timezone)

    @property
    def fields(self) -> CronFields:
        """The matching sets the expression denotes."""
        return self._fields

    def next_after(self, ts: float) -> float:
        """The first fire time strictly after ``ts``, both UTC epoch seconds.

        See the module docstring for how DST gaps and overlaps are handled.

        :raises InvalidRequestError: (field ``"ts"``) if ``ts`` is not finite or the next
            fire time would fall outside the years 1-9999
        """
        given: object = ts  # callers outside mypy may pass anything
        if isinstance(given, bool) or not isinstance(given, int | float) or not math.isfinite(ts):
            raise InvalidRequestError("ts", ts, "expected a finite number of epoch seconds")
        secs = math.floor(ts)
        try:
            local = datetime.fromtimestamp(secs, self._tz)
            if local.fold:
                # The second pass through a repeated hour: every wall time up to the end
                # of the overlap has already fired (at its first occurrence).
                start = self._overlap_end(secs, local)
            else:
                start = local.replace(tzinfo=None, second=0, microsecond=0) + _MINUTE
            for _ in range(_MAX_RETRIES):
                match = self._first_match(start)
                instant = self._instant(match)
                if instant > ts:
                    return float(instant)
                start = match + _MINUTE  # not reached while f is monotonic; defensive
        except (_OutOfRange, OverflowError, OSError, ValueError):
            pass
        raise InvalidRequestError("ts", ts, "no fire time within the supported date range")

    # -- wall-clock search ------------------------------------------------------------

    def _first_match(self, start: datetime) -> datetime:
        """The first local wall-clock minute at or after naive ``start`` that matches."""
        months, hours, minutes = self._months, self._hours, self._minutes
        month_set = self._fields.months
        year, month, day = start.year, start.month, start.day
        hour, minute = start.hour, start.minute
        last_year = min(year + _SEARCH_YEARS, 9999)
        while year <= last_year:
            if month not in month_set:  # also month 13, after December
                i = bisect.bisect_left(months, month)
                if i == len(months):
                    year, month = year + 1, months[0]
                else:
                    month = months[i]
                day, hour, minute = 1, 0, 0
                continue
            found = self._next_day(year, month, day)
            if found is None:
                month, day, hour, minute = month + 1, 1, 0, 0
                continue
            if found != day:
                day, hour, minute = found, 0, 0
            i = bisect.bisect_left(hours, hour)
            if i == len(hours):
                day, hour, minute = day + 1, 0, 0
                continue
            if hours[i] != hour:
                hour, minute = hours[i], 0
            i = bisect.bisect_left(minutes, minute)
            if i == len(minutes):
                hour, minute = hour + 1, 0
                continue
            return datetime(year, month, day, hour, minutes[i])
        raise _OutOfRange

    def _next_day(self, year: int, month: int, day: int) -> int | None:
        """The first matching day of the month at or after ``day``, if any."""
        last = _days_in_month(year, month)
        if day > last:
            return None
        doms, skip = self._doms, self._dow_skip
        if self._fields.day_or:
            i = bisect.bisect_left(doms, day)
            by_dom = doms[i] if i < len(doms) else last + 1
            by_dow = day + skip[date(year, month, day).isoweekday() % 7]
            found = min(by_dom, by_dow)
            return found if found <= last else None
        while True:  # both must match: alternate between the two until they agree
            i = bisect.bisect_left(doms, day)
            if i == len(doms) or doms[i] > last:
                return None
            day = doms[i]
            ahead = skip[date(year, month, day).isoweekday() % 7]
            if ahead == 0:
                return day
            day += ahead
            if day > last:
                return None

    # -- wall clock to instant ------------------------------------------------------

    def _instant(self, local: datetime) -> int:
        """``f(W)``: the instant a matching naive local time fires at (module docstring)."""
        tz = self._tz
        # fold=0: the first occurrence of a repeated time; for a skipped time, the offset
        # before the change, which lands after the gap.
        after = int(local.replace(tzinfo=tz).timestamp())
        if datetime.fromtimestamp(after, tz).replace(tzinfo=None) == local:
            return after
        # Skipped: fold=1 uses the offset after the change and lands before the gap.
        before = int(local.replace(tzinfo=tz, fold=1).timestamp())
        return self._transition(before, after)

    def _transition(self, lo: int, hi: int) -> int:
        """The first second in ``(lo, hi]`` with ``hi``'s UTC offset (one change between)."""
        tz = self._tz
        target = datetime.fromtimestamp(hi, tz).utcoffset()
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if datetime.fromtimestamp(mid, tz).utcoffset() == target:
                hi = mid
            else:
                lo = mid
        return hi

    def _overlap_end(self, secs: int, local: datetime) -> datetime:
        """The first naive local minute after the repeated span that ``local`` (the
        second occurrence, at ``secs``) lies in."""
        first = int(local.replace(fold=0).timestamp())
        change = self._transition(first, secs)
        offset_before = datetime.fromtimestamp(first, self._tz).utcoffset()
        assert offset_before is not None
        end = datetime.fromtimestamp(change, UTC).replace(tzinfo=None) + offset_before
        if end.second or end.microsecond:
            end = end.replace(second=0, microsecond=0) + _MINUTE
        return end
