"""Extension points: everything an app or a library implements to extend wm_async, in
one place.

- **A store** (a backend): subclass :class:`Store` and implement its lifecycle-named
  operations. They take and return :class:`WorkRecord` values and apply
  :class:`Change` objects (compare-and-set: write ``after`` only if the stored work still
  is ``before``); :class:`ClaimParams` and :class:`Claimed` are what a claim takes and
  gives, :class:`StoreListener` what a store shared by several processes reports changes
  to, :class:`UniquePlan` what a unique enqueue decided, :class:`JoinedTransaction`
  the writes of an enqueue in an app's own transaction (what ``join_transaction``
  returns, in a store that can share one). Stores persist; they never decide (the
  lifecycle functions do). A claim given workers' flow limits (``ClaimParams.limits``,
  :class:`WorkerLimits`) counts their RUNNING works and keeps their token buckets
  (:class:`Bucket`); :class:`Allowance` says how many works it may take, what the
  bucket becomes, and when the worker's next work may start. :class:`BrowseFilter`,
  :class:`WorkPage`, :class:`Overview` and :class:`TimeBucket` are what the dashboard's
  reads take and give (``browse`` and ``overview`` have defaults over ``query``). Run
  the store conformance suite
  (:mod:`wm_async.testing.conformance`) against it.
- **A clock**: subclass :class:`Clock` (``now``, ``sleep_until``, ``call_at``; and
  ``monotonic``/``call_later`` if its time can step). :class:`Wakeup` is what a sleep can
  be woken by, :class:`Timer` what ``call_at`` returns.
- **A signal** (a condition works may wait on): anything with the :class:`Signal`
  protocol (a ``value`` and ``wait_changed()``); the built-ins live in
  :mod:`wm_async.signals`.
- **An input merger** (how a chained work merges its prerequisites' outputs): a class
  with the :class:`InputMerger` protocol (a ``name`` and a static ``merge``).

``docs/architecture.md`` shows where each sits among the layers.
"""

from __future__ import annotations

from ._clock import Clock, Timer, Wakeup
from ._core.lifecycle import Change, UniquePlan
from ._core.limits import Allowance, Bucket, WorkerLimits
from ._core.mergers import InputMerger
from ._core.record import WorkRecord
from .signals import Signal
from .stores._base import Claimed, ClaimParams, JoinedTransaction, Store, StoreListener
from .stores._browse import BrowseFilter, Overview, TimeBucket, WorkPage

__all__ = (
    "Allowance",
    "BrowseFilter",
    "Bucket",
    "Change",
    "ClaimParams",
    "Claimed",
    "Clock",
    "InputMerger",
    "JoinedTransaction",
    "Overview",
    "Signal",
    "Store",
    "StoreListener",
    "TimeBucket",
    "Timer",
    "UniquePlan",
    "Wakeup",
    "WorkPage",
    "WorkRecord",
    "WorkerLimits",
)

for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith(("wm_async._", "wm_async.stores._")):
        _value.__module__ = __name__  # shown by a public path
del _name, _value
