"""wm_async's cron parser beside croniter and cronsim: agreement with the DST and day-rule
tables of tests/test_cron.py, what each one rejects of tests/test_cron.py's invalid
expressions, and the time to parse and to compute the next fire time.

    pip install croniter cronsim   # (requirements-bench.txt)
    python -m benchmarks.cron_peers

A library that is not installed is listed as skipped. The outcome decided whether one of
them should replace wm_async/_core/cron.py (it did not: see docs/semantics.md, rule 4,
and the note in the README's periodic work section).
"""

from __future__ import annotations

import functools
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent

#: fires(expression, timezone, start epoch seconds, count) -> UTC epoch seconds
Fires = Callable[[str, str, float, int], list[float]]
Parse = Callable[[str], object]


def _ours() -> tuple[Fires, Parse]:
    from wm_async._core.cron import CronSchedule

    def fires(expression: str, timezone: str, start: float, count: int) -> list[float]:
        schedule = CronSchedule.parse(expression, timezone)
        out, ts = [], start
        for _ in range(count):
            ts = schedule.next_after(ts)
            out.append(ts)
        return out

    return fires, lambda expression: CronSchedule.parse(expression, "UTC")


def _croniter() -> tuple[Fires, Parse]:
    from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

    def fires(expression: str, timezone: str, start: float, count: int) -> list[float]:
        it = croniter(expression, datetime.fromtimestamp(start, ZoneInfo(timezone)))
        return [it.get_next(datetime).timestamp() for _ in range(count)]

    def parse(expression: str) -> object:
        if not croniter.is_valid(expression):
            raise ValueError(expression)
        return croniter(expression, datetime(2026, 1, 1, tzinfo=UTC))

    return fires, parse


def _cronsim() -> tuple[Fires, Parse]:
    from cronsim import CronSim

    def fires(expression: str, timezone: str, start: float, count: int) -> list[float]:
        it = CronSim(expression, datetime.fromtimestamp(start, ZoneInfo(timezone)))
        return [next(it).timestamp() for _ in range(count)]

    return fires, lambda expression: CronSim(expression, datetime(2026, 1, 1, tzinfo=UTC))


LIBRARIES: dict[str, Callable[[], tuple[Fires, Parse]]] = {
    "wm_async": _ours,
    "croniter": _croniter,
    "cronsim": _cronsim,
}


def _tables() -> tuple[list[tuple[str, str, str, str, list[str]]], list[str]]:
    """The fire-time cases (id, zone, expression, start, expected) and the invalid
    expressions, from tests/test_cron.py."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_cron as t  # type: ignore[import-not-found, unused-ignore]

    cases = [(p.id, *p.values) for p in t.DST_CASES]
    # The day-rule and month-end tests compare dates (their fire times are midnight UTC,
    # except "59 23 31 12 *"): expected entries of 10 characters are compared as dates.
    for expression, expected in t.test_day_of_month_and_day_of_week.pytestmark[0].args[1]:
        dates = [e if len(e) == 10 else f"2026-{e}" for e in expected]
        cases.append((f"days {expression}", "UTC", expression, "2026-03-01T00:00", dates))
    for expression, start, expected in t.test_month_ends_and_leap_years.pytestmark[0].args[1]:
        cases.append((f"month ends {expression}", "UTC", expression, start, expected))
    invalid = [e for e, _, _ in t.INVALID if isinstance(e, str)]
    return cases, invalid


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M")


def _utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def agreement(fires: Fires, cases: list[Any]) -> tuple[int, list[str]]:
    """How many cases a library gets right, and the ids of the others (with why)."""
    right, wrong = 0, []
    for case_id, zone, expression, start, expected in cases:
        try:
            got = [_iso(ts) for ts in fires(expression, zone, _utc(start), len(expected))]
        except Exception as exc:  # noqa: BLE001  # a library's error is a result here
            wrong.append(f"{case_id}: {type(exc).__name__}")
            continue
        pairs = list(zip(got, expected, strict=True))
        if all(g[: len(e)] == e for g, e in pairs):
            right += 1
        else:
            first = next(i for i, (g, e) in enumerate(pairs) if g[: len(e)] != e)
            wrong.append(f"{case_id}: #{first} {got[first]} (expected {expected[first]})")
    return right, wrong


def rejects(parse: Parse, invalid: list[str]) -> list[str]:
    """The invalid expressions a library accepts."""
    accepted = []
    for expression in invalid:
        try:
            parse(expression)
        except Exception:  # noqa: BLE001, S112  # each library raises its own error
            continue
        accepted.append(expression)
    return accepted


def per_call(function: Callable[[], object], seconds: float = 0.3) -> float:
    """Median seconds per call over five batches."""
    function()
    batches = []
    for _ in range(5):
        calls, began = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - began) < seconds / 5:
            function()
            calls += 1
        batches.append(elapsed / calls)
    return statistics.median(batches)


SPEED_CASES = [
    ("0 3 * * *", "Europe/Berlin"),
    ("*/15 1-3 * * *", "Europe/Berlin"),
    ("0 0 29 2 *", "Europe/Berlin"),
]


def main() -> int:
    """Print the three tables."""
    cases, invalid = _tables()
    start = _utc("2026-01-01T00:00")
    print(f"{len(cases)} fire-time cases (DST, day rules, month ends); {len(invalid)} invalid")
    print(
        f"{'library':<10} {'right':>7} {'accepts invalid':>16} {'parse µs':>9} "
        + " ".join(f"{'next ' + e + ' µs':>22}" for e, _ in SPEED_CASES)
    )
    details: list[str] = []
    for name, load in LIBRARIES.items():
        try:
            fires, parse = load()
        except ImportError as exc:
            print(f"{name:<10} skipped: {exc}")
            continue
        right, wrong = agreement(fires, cases)
        accepted = rejects(parse, invalid)
        parse_us = per_call(functools.partial(parse, "*/15 1-3 * * MON-FRI")) * 1e6
        # 20 consecutive fire times, per fire time (what a scheduler asks).
        speeds = [
            per_call(functools.partial(fires, expression, zone, start, 20)) / 20
            for expression, zone in SPEED_CASES
        ]
        print(
            f"{name:<10} {right:>3}/{len(cases):<3} {len(accepted):>16} {parse_us:>9.1f} "
            + " ".join(f"{s * 1e6:>22.1f}" for s in speeds)
        )
        details += [f"{name} wrong: {w}" for w in wrong]
        details += [f"{name} accepts: {a!r}" for a in accepted]
    print()
    print("\n".join(details))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
