"""wm_async: Android WorkManager's model of durable background work, for asyncio.

Everything public is re-exported here; import from ``wm_async``, not from the private
modules.
"""

from __future__ import annotations

from ._api.chains import WorkContinuation as WorkContinuation
from ._api.manager import RunState as RunState
from ._api.manager import WorkManager as WorkManager
from ._api.requests import OneTimeWorkRequest as OneTimeWorkRequest
from ._api.requests import PeriodicWorkRequest as PeriodicWorkRequest
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._clock import Wakeup as Wakeup
from ._core.data import Data as Data
from ._core.data import JSONValue as JSONValue
from ._core.errors import BlockingCallError as BlockingCallError
from ._core.errors import DataTooLargeError as DataTooLargeError
from ._core.errors import InvalidRequestError as InvalidRequestError
from ._core.errors import NotRunningError as NotRunningError
from ._core.errors import SchedulerError as SchedulerError
from ._core.errors import StoreBusyError as StoreBusyError
from ._core.errors import StoreCorruptError as StoreCorruptError
from ._core.errors import StoreError as StoreError
from ._core.errors import StoreFullError as StoreFullError
from ._core.errors import StoreGoneError as StoreGoneError
from ._core.errors import StoreReadOnlyError as StoreReadOnlyError
from ._core.errors import UnknownWorkerError as UnknownWorkerError
from ._core.errors import WorkManagerError as WorkManagerError
from ._core.event import CallNext as CallNext
from ._core.event import WorkEvent as WorkEvent
from ._core.explanation import WorkExplanation as WorkExplanation
from ._core.limits import HeldBy as HeldBy
from ._core.limits import RateLimit as RateLimit
from ._core.mergers import ArrayCreatingInputMerger as ArrayCreatingInputMerger
from ._core.mergers import InputMerger as InputMerger
from ._core.mergers import OverwritingInputMerger as OverwritingInputMerger
from ._core.model import Backoff as Backoff
from ._core.model import BackoffPolicy as BackoffPolicy
from ._core.model import Constraints as Constraints
from ._core.model import ExistingPeriodicWorkPolicy as ExistingPeriodicWorkPolicy
from ._core.model import ExistingWorkPolicy as ExistingWorkPolicy
from ._core.model import NetworkType as NetworkType
from ._core.model import Periodicity as Periodicity
from ._core.model import Result as Result
from ._core.model import ResultKind as ResultKind
from ._core.model import StopReason as StopReason
from ._core.model import UpdateResult as UpdateResult
from ._core.model import WorkError as WorkError
from ._core.model import WorkInfo as WorkInfo
from ._core.model import WorkQuery as WorkQuery
from ._core.model import WorkState as WorkState
from ._core.version import __version__ as __version__
from ._runtime.events import WorkWatcher as WorkWatcher
from ._runtime.executor import Middleware as Middleware
from ._runtime.executor import WorkContext as WorkContext
from .signals import Flag as Flag
from .signals import Predicate as Predicate
from .signals import Signal as Signal
from .signals import TimeWindow as TimeWindow
from .sync import SyncClient as SyncClient

__all__ = (
    # the manager and what workers see
    "WorkManager",
    "RunState",
    "WorkContext",
    "Result",
    "ResultKind",
    # requests
    "OneTimeWorkRequest",
    "PeriodicWorkRequest",
    "Constraints",
    "NetworkType",
    "Backoff",
    "BackoffPolicy",
    "ExistingWorkPolicy",
    "ExistingPeriodicWorkPolicy",
    "UpdateResult",
    "InputMerger",
    "OverwritingInputMerger",
    "ArrayCreatingInputMerger",
    "WorkContinuation",
    "RateLimit",
    "Data",
    "JSONValue",
    # observation
    "WorkInfo",
    "WorkQuery",
    "WorkState",
    "StopReason",
    "WorkError",
    "WorkExplanation",
    "HeldBy",
    "Periodicity",
    "WorkWatcher",
    "WorkEvent",
    "Middleware",
    "CallNext",
    # from synchronous code
    "SyncClient",
    # signals (also in wm_async.signals, with the built-ins and combinators)
    "Signal",
    "Flag",
    "Predicate",
    "TimeWindow",
    # clocks
    "Clock",
    "SystemClock",
    "Wakeup",
    # errors
    "WorkManagerError",
    "InvalidRequestError",
    "DataTooLargeError",
    "UnknownWorkerError",
    "StoreError",
    "StoreCorruptError",
    "StoreFullError",
    "StoreReadOnlyError",
    "StoreBusyError",
    "StoreGoneError",
    "NotRunningError",
    "SchedulerError",
    "BlockingCallError",
)

# Public names show their public path (``wm_async.WorkInfo``, not the private module that
# defines them) in reprs, tracebacks and documentation.
for _name in __all__:
    _value = globals()[_name]
    if getattr(_value, "__module__", "").startswith("wm_async._"):
        _value.__module__ = __name__
del _name, _value
