"""A worker's retry policy, declared at registration: the defaults its works run with
(timeout, backoff, max_attempts) and the exception types that mean a retry.

Applied when a work runs, by the process that runs it (semantics 46): the stored record
keeps only what its request said, so works enqueued by a producer that has no registry
get the policy too, and changing a worker's policy applies to works already enqueued.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Final

import attrs

from . import validators
from .errors import InvalidRequestError
from .limits import RateLimit, WorkerLimits, to_max_running, to_rate_limit
from .model import DEFAULT_BACKOFF, Backoff

if TYPE_CHECKING:
    from .record import WorkRecord


def to_retry_on(value: object) -> tuple[type[Exception], ...]:
    """Check ``retry_on``: an exception class or a collection of them.

    :raises InvalidRequestError: for anything that is not a subclass of ``Exception``
        (``BaseException``'s other subclasses, such as cancellation, are not retried)
    """
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidRequestError(
            "retry_on", value, "expected an exception class or a tuple of them"
        )
    out: list[type[Exception]] = []
    for item in value:
        if not isinstance(item, type) or not issubclass(item, Exception):
            raise InvalidRequestError("retry_on", item, "expected a subclass of Exception")
        out.append(item)
    return tuple(dict.fromkeys(out))


def to_timeout(value: object) -> float | None:
    """Check a worker's ``timeout`` (a positive duration or ``None``), in seconds."""
    if value is None:
        return None
    out = validators.to_timedelta("timeout", value)
    validators.check_positive("timeout", out)
    return out.total_seconds()


def _check_backoff(
    instance: object, attribute: attrs.Attribute[Backoff | None], value: object
) -> None:
    if value is not None and not isinstance(value, Backoff):
        raise InvalidRequestError("backoff", value, "expected a Backoff")


def _check_max_attempts(
    instance: object, attribute: attrs.Attribute[int | None], value: object
) -> None:
    validators.check_optional_positive_int("max_attempts", value)


@attrs.frozen(kw_only=True)
class WorkerPolicy:
    """A worker's defaults for its works, and the exceptions that mean a retry.

    :ivar retry_on: exception types that, raised by the worker, mean ``Result.retry()``
    :ivar timeout: the run time limit (seconds) of works whose request sets none
    :ivar backoff: the backoff of works whose request keeps the library's default
    :ivar max_attempts: the attempt limit of works whose request sets none
    :ivar max_running: at most this many of its works RUNNING at once (semantics 50)
    :ivar rate_limit: at most so many starts per period (semantics 50)
    """

    retry_on: tuple[type[Exception], ...] = attrs.field(default=(), converter=to_retry_on)
    timeout: float | None = attrs.field(default=None, converter=to_timeout)
    backoff: Backoff | None = attrs.field(default=None, validator=_check_backoff)
    max_attempts: int | None = attrs.field(default=None, validator=_check_max_attempts)
    max_running: int | None = attrs.field(default=None, converter=to_max_running)
    rate_limit: RateLimit | None = attrs.field(default=None, converter=to_rate_limit)

    @property
    def limits(self) -> WorkerLimits | None:
        """The worker's flow limits, if it has any."""
        if self.max_running is None and self.rate_limit is None:
            return None
        return WorkerLimits(self.max_running, self.rate_limit)

    @classmethod
    def build(
        cls,
        *,
        retry_on: object = (),
        timeout: timedelta | float | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        max_running: int | None = None,
        rate_limit: RateLimit | None = None,
    ) -> WorkerPolicy:
        """The policy for these registration keywords (:data:`NO_POLICY` if none is set).

        :raises InvalidRequestError: for a bad value
        """
        policy = cls(
            retry_on=retry_on,
            timeout=timeout,
            backoff=backoff,
            max_attempts=max_attempts,
            max_running=max_running,
            rate_limit=rate_limit,
        )
        return NO_POLICY if policy == NO_POLICY else policy

    def timeout_for(self, record: WorkRecord, default: float | None) -> float | None:
        """The request's timeout, else the worker's, else the manager's ``default``."""
        if record.timeout is not None:
            return record.timeout
        return self.timeout if self.timeout is not None else default

    def max_attempts_for(self, record: WorkRecord) -> int | None:
        """The request's ``max_attempts``, else the worker's."""
        return record.max_attempts if record.max_attempts is not None else self.max_attempts

    def backoff_for(self, record: WorkRecord) -> Backoff:
        """The request's backoff, unless it equals the library's default (a request
        cannot be told from one that set none): then the worker's, if it has one."""
        if self.backoff is not None and record.backoff == DEFAULT_BACKOFF:
            return self.backoff
        return record.backoff


#: The policy of a worker registered without one: the requests' values alone.
NO_POLICY: Final = WorkerPolicy()
