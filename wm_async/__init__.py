"""wm_async: Android WorkManager's model of durable background work, for asyncio.

Everything public is re-exported here; import from ``wm_async``, not from the private
modules.
"""

from __future__ import annotations

from ._chain import ArrayCreatingInputMerger as ArrayCreatingInputMerger
from ._chain import InputMerger as InputMerger
from ._chain import OverwritingInputMerger as OverwritingInputMerger
from ._chain import WorkContinuation as WorkContinuation
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._clock import Wakeup as Wakeup
from ._errors import DataTooLargeError as DataTooLargeError
from ._errors import InvalidRequestError as InvalidRequestError
from ._errors import NotRunningError as NotRunningError
from ._errors import SchedulerError as SchedulerError
from ._errors import StoreBusyError as StoreBusyError
from ._errors import StoreCorruptError as StoreCorruptError
from ._errors import StoreError as StoreError
from ._errors import StoreFullError as StoreFullError
from ._errors import StoreGoneError as StoreGoneError
from ._errors import StoreReadOnlyError as StoreReadOnlyError
from ._errors import UnknownWorkerError as UnknownWorkerError
from ._errors import WorkManagerError as WorkManagerError
from ._events import WorkWatcher as WorkWatcher
from ._executor import WorkContext as WorkContext
from ._manager import RunState as RunState
from ._manager import WorkManager as WorkManager
from ._model import Backoff as Backoff
from ._model import BackoffPolicy as BackoffPolicy
from ._model import Constraints as Constraints
from ._model import Data as Data
from ._model import ExistingPeriodicWorkPolicy as ExistingPeriodicWorkPolicy
from ._model import ExistingWorkPolicy as ExistingWorkPolicy
from ._model import JSONValue as JSONValue
from ._model import NetworkType as NetworkType
from ._model import Periodicity as Periodicity
from ._model import Result as Result
from ._model import ResultKind as ResultKind
from ._model import StopReason as StopReason
from ._model import UpdateResult as UpdateResult
from ._model import WorkError as WorkError
from ._model import WorkExplanation as WorkExplanation
from ._model import WorkInfo as WorkInfo
from ._model import WorkQuery as WorkQuery
from ._model import WorkState as WorkState
from ._requests import OneTimeWorkRequest as OneTimeWorkRequest
from ._requests import PeriodicWorkRequest as PeriodicWorkRequest
from .signals import Flag as Flag
from .signals import Predicate as Predicate
from .signals import Signal as Signal
from .signals import TimeWindow as TimeWindow

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
    "Data",
    "JSONValue",
    # observation
    "WorkInfo",
    "WorkQuery",
    "WorkState",
    "StopReason",
    "WorkError",
    "WorkExplanation",
    "Periodicity",
    "WorkWatcher",
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
)
