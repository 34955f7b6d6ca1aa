"""A worker's flow limits, declared at registration (semantics 50): at most N of its runs
at once (``max_running``), and at most N starts per period (``rate_limit``, a token
bucket with a burst).

Stores enforce them inside their claim (the running count and the bucket are read and
written in the claim's transaction, so on PostgreSQL they hold across processes); this
module is the arithmetic they share, pure: what a claim may take of a worker's due works,
the bucket after it, and when the worker's next work may start.
"""

from __future__ import annotations

import enum
import math
from datetime import timedelta
from typing import Final

import attrs

from .errors import InvalidRequestError

#: The largest ``max_running``, ``RateLimit.n`` and ``RateLimit.burst`` accepted.
MAX_LIMIT: Final = 1_000_000


class HeldBy(enum.StrEnum):
    """What holds back a due ENQUEUED work of a worker (``WorkInfo.held_by``,
    ``WorkExplanation.held_by``)."""

    #: The worker is paused (``pause_worker``).
    PAUSED = "paused"
    #: ``max_running`` of the worker's runs are running.
    MAX_RUNNING = "max_running"
    #: The worker's ``rate_limit`` has no token left until the next one is due.
    RATE_LIMIT = "rate_limit"


#: ``explain()``'s words for a due work its worker's limit holds back.
HELD_REASONS: Final = {
    HeldBy.MAX_RUNNING: "runs its max_running works already: it starts when one ends",
    HeldBy.RATE_LIMIT: "is at its rate_limit: it starts when the next token is due",
}


def _check_count(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(field, value, "expected an int")
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequestError(field, value, f"must be from 1 to {MAX_LIMIT:,}")


def _to_period(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise InvalidRequestError("per", value, "expected a timedelta or a number of seconds")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidRequestError("per", value, "must be a positive, finite duration")
    if seconds > 365 * 86400:
        raise InvalidRequestError("per", value, "must be at most a year")
    return seconds


def _check_n(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    _check_count("n", value)


def _check_burst(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    _check_count("burst", value)


@attrs.frozen
class RateLimit:
    """At most ``n`` starts of a worker's runs per ``per`` (a ``timedelta`` or seconds),
    as a token bucket: a start takes a token, the bucket refills at ``n / per`` tokens a
    second and holds at most ``burst`` (so ``burst`` starts may follow one another at
    once after a quiet spell; over any span of ``t`` seconds at most ``burst + n·t/per``
    start). The default ``burst`` of 1 spaces the starts ``per / n`` apart.

    :raises InvalidRequestError: for an ``n`` or ``burst`` that is not an int from 1 to
        1,000,000, or a ``per`` that is not a positive, finite duration of at most a year
    """

    n: int = attrs.field(validator=_check_n)
    per: float = attrs.field(kw_only=True, converter=_to_period)
    burst: int = attrs.field(default=1, kw_only=True, validator=_check_burst)

    @property
    def interval(self) -> float:
        """Seconds between two tokens."""
        return self.per / self.n


def to_max_running(value: object) -> int | None:
    """Check ``max_running``: ``None`` (no cap) or an int from 1 to 1,000,000."""
    if value is not None:
        _check_count("max_running", value)
    return value  # type: ignore[return-value]  # checked above


def to_rate_limit(value: object) -> RateLimit | None:
    """Check ``rate_limit``: ``None`` or a :class:`RateLimit`."""
    if value is not None and not isinstance(value, RateLimit):
        raise InvalidRequestError("rate_limit", value, "expected a RateLimit or None")
    return value


@attrs.frozen
class WorkerLimits:
    """The flow limits of one worker, as a claim takes them.

    :ivar max_running: at most this many of its works RUNNING at once (``None``: no cap)
    :ivar rate: its token bucket (``None``: no rate limit)
    """

    max_running: int | None = None
    rate: RateLimit | None = None


#: Seconds within which two times count as one when a bucket is refilled. Times are
#: epoch seconds (about 1.9e9), whose floats are 2.4e-7 s apart: a token due "now" may
#: come out as 0.9999990 tokens, and waiting the 1e-7 s left would not move the clock
#: at all, so a claimer would wake at the same instant again and again.
TIME_SLACK: Final = 1e-6


def _slack(rate: RateLimit) -> float:
    """The tokens a bucket gains in :data:`TIME_SLACK` (what counts as a whole token)."""
    return TIME_SLACK * rate.n / rate.per + 1e-9


@attrs.frozen
class Bucket:
    """A rate-limited worker's token bucket as stored: ``tokens`` at time ``at``."""

    tokens: float
    at: float

    @classmethod
    def full(cls, rate: RateLimit, now: float) -> Bucket:
        """A bucket never used: full."""
        return cls(float(rate.burst), now)

    def refilled(self, rate: RateLimit, now: float) -> float:
        """The tokens at ``now`` (never more than the burst; a clock that went back
        adds none)."""
        gained = max(0.0, now - self.at) * rate.n / rate.per
        return min(float(rate.burst), self.tokens + gained)


@attrs.frozen
class Allowance:
    """What a claim may take of one limited worker's due works now, and how to finish.

    :ivar take: the most of its works that may start now (cap and tokens)
    :ivar by_cap: ``take`` is bounded by the cap (not by the tokens)
    :ivar tokens: the bucket's tokens now (``None``: no rate limit)
    """

    limits: WorkerLimits
    running: int
    take: int
    tokens: float | None
    now: float

    @classmethod
    def of(
        cls, limits: WorkerLimits, *, running: int, bucket: Bucket | None, now: float
    ) -> Allowance:
        """The allowance of a worker with ``running`` works RUNNING and ``bucket`` (its
        stored bucket; ``None``: never used)."""
        take = MAX_LIMIT
        if limits.max_running is not None:
            take = max(0, limits.max_running - running)
        tokens = None
        if limits.rate is not None:
            tokens = (bucket or Bucket.full(limits.rate, now)).refilled(limits.rate, now)
            take = min(take, math.floor(tokens + _slack(limits.rate)))
        return cls(limits, running, take, tokens, now)

    def bucket_after(self, taken: int) -> Bucket | None:
        """The bucket to store after ``taken`` works started (``None``: no rate)."""
        if self.tokens is None:
            return None
        return Bucket(max(0.0, self.tokens - taken), self.now)

    def held_by(self, taken: int) -> HeldBy | None:
        """What holds the worker's remaining due works after ``taken`` started now
        (``None``: nothing of its own; the claim's limit, say)."""
        limits = self.limits
        if limits.max_running is not None and self.running + taken >= limits.max_running:
            return HeldBy.MAX_RUNNING
        rate = limits.rate
        if rate is not None and self.tokens is not None and self.tokens - taken < 1 - _slack(rate):
            return HeldBy.RATE_LIMIT
        return None

    def next_start(self, taken: int, next_due: float | None) -> float | None:
        """When the worker's next work may start, given the earliest due time of its
        claimable works left (``None``: none): ``None`` while the cap is full (a run
        that ends frees a slot and wakes the claimer) if it is due now, else that due
        time, no earlier than the next token."""
        if next_due is None:
            return None
        held = self.held_by(taken)
        if held is HeldBy.MAX_RUNNING:
            return None if next_due <= self.now else next_due
        rate, tokens = self.limits.rate, self.tokens
        if held is HeldBy.RATE_LIMIT and rate is not None and tokens is not None:
            # Never less than TIME_SLACK ahead: a token due sooner counts as there now
            # (see _slack), so a wake-up before it would find nothing to start.
            wait = max((1 - (tokens - taken)) * rate.interval, TIME_SLACK)
            return max(next_due, self.now + wait)
        return next_due
