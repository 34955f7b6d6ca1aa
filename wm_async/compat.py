"""The Flutter ``workmanager`` plugin's API over a :class:`~wm_async.WorkManager`
(semantics 35), so code written for the plugin ports almost line for line::

    manager = wm.WorkManager(store="sqlite:///wm_async.db")
    workmanager = Workmanager(manager)

    def callback_dispatcher() -> None:
        workmanager.execute_task(handle_task)

    async def handle_task(task_name: str, input_data: dict[str, JSONValue]) -> bool:
        ...
        return True          # False (or None): retry later; raising: the task failed

    workmanager.initialize(callback_dispatcher)
    async with manager:
        await workmanager.register_periodic_task("sync", "syncTask")   # every 15 minutes

The plugin's camelCase names become snake_case (``registerOneOffTask`` →
:meth:`~Workmanager.register_one_off_task`), its ``Duration`` arguments are
``timedelta`` (or seconds), its enums are wm_async's, and its Futures are coroutines.
Every task runs as a work of the worker ``"wm_async.compat:<task name>"`` (so ``wm-async
list`` and the logs show the task name), tagged ``"wm_async.compat"``; its input is the
task's ``input_data``. Tasks stored by earlier versions (worker ``"wm_async.compat"``,
the task name in the input under :data:`TASK_NAME_KEY`) still run.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TypeAlias

import anyio

from ._api.manager import WorkManager
from ._api.requests import (
    OneTimeWorkRequest,
    PeriodicWorkRequest,
)
from ._core import validators
from ._core.data import JSONValue
from ._core.errors import InvalidRequestError
from ._core.model import (
    Backoff,
    BackoffPolicy,
    Constraints,
    ExistingPeriodicWorkPolicy,
    ExistingWorkPolicy,
    Result,
    WorkQuery,
    WorkState,
)
from ._runtime.executor import WorkContext

__all__ = ("TASK_NAME_KEY", "WORKER_NAME", "WORKER_PREFIX", "TaskHandler", "Workmanager")

logger = logging.getLogger("wm_async.compat")

#: The tag of every facade task; with ``:`` and the task name, its worker name.
WORKER_NAME = "wm_async.compat"
#: The worker names of facade tasks begin with this; the task name follows.
WORKER_PREFIX = f"{WORKER_NAME}:"
#: Where tasks stored by earlier versions (worker ``WORKER_NAME``) carry their task name
#: (removed before the handler is called).
TASK_NAME_KEY = "wm_async.compat.task_name"
#: The plugin's default period for periodic tasks.
DEFAULT_FREQUENCY = timedelta(minutes=15)

#: ``handler(task_name, input_data)``: True → success; False or None → retry; raise →
#: failure. Async, or sync (run in a worker thread).
TaskHandler: TypeAlias = Callable[
    [str, dict[str, JSONValue]], Awaitable[bool | None] | bool | None
]

_SCHEDULED = frozenset({WorkState.ENQUEUED, WorkState.RUNNING})


class Workmanager:
    """The Flutter ``workmanager`` plugin's ``Workmanager``, backed by ``manager``.

    :param manager: the WorkManager that stores and runs the tasks
    """

    def __init__(self, manager: WorkManager) -> None:
        if not isinstance(manager, WorkManager):
            raise InvalidRequestError("manager", manager, "expected a WorkManager")
        self._manager = manager
        self._handler: TaskHandler | None = None
        self._initialized = False
        self._debug = False

    def __repr__(self) -> str:
        return f"Workmanager({self._manager!r})"

    @property
    def manager(self) -> WorkManager:
        """The WorkManager behind this facade."""
        return self._manager

    # -- set-up

    def initialize(
        self, callback_dispatcher: Callable[[], object], *, is_in_debug_mode: bool = False
    ) -> None:
        """Call ``callback_dispatcher``, which must hand the task handler to
        :meth:`execute_task`, and register the facade's worker with the manager.

        :param callback_dispatcher: the app's dispatcher function
        :param is_in_debug_mode: log every task run and its outcome at INFO on the
            ``wm_async.compat`` logger (the plugin shows notifications instead); printed to
            stderr when the app has not configured logging
        :raises InvalidRequestError: if the dispatcher did not call :meth:`execute_task`,
            or this facade was initialized before
        """
        if self._initialized:
            raise InvalidRequestError("initialize", callback_dispatcher, "already initialized")
        if not callable(callback_dispatcher):
            raise InvalidRequestError(
                "callback_dispatcher", callback_dispatcher, "expected a function"
            )
        callback_dispatcher()
        if self._handler is None:
            raise InvalidRequestError(
                "callback_dispatcher",
                callback_dispatcher,
                "it must call workmanager.execute_task(handler)",
            )
        self._debug = bool(is_in_debug_mode)
        if self._debug:
            _show_debug_log()
        self._manager._register_worker_family(WORKER_PREFIX, self._run)
        self._manager.register_worker(WORKER_NAME, self._run)  # tasks of earlier versions
        self._initialized = True

    def execute_task(self, handler: TaskHandler) -> None:
        """Set the function that runs every task (call it from the callback dispatcher).

        :raises InvalidRequestError: if ``handler`` is not callable
        """
        if not callable(handler):
            raise InvalidRequestError("handler", handler, "expected a function")
        self._handler = handler

    async def _run(self, ctx: WorkContext) -> Result:
        handler = self._handler
        assert handler is not None  # initialize() registers _run only after it is set
        data = dict(ctx.input)
        if ctx.worker.startswith(WORKER_PREFIX):
            task_name = ctx.worker.removeprefix(WORKER_PREFIX)
        else:  # stored by an earlier version
            task_name = str(data.pop(TASK_NAME_KEY, ""))
        if self._debug:
            logger.info(
                "task %r (work %s) starting, run %d", task_name, ctx.id, ctx.run_attempt_count + 1
            )
        if inspect.iscoroutinefunction(handler):
            outcome: object = await handler(task_name, data)
        else:
            outcome = await anyio.to_thread.run_sync(handler, task_name, data)
            if inspect.isawaitable(outcome):  # a sync function that returned a coroutine
                outcome = await outcome
        if outcome is True:
            result = Result.success()
        elif outcome is False or outcome is None:
            result = Result.retry()
        else:
            raise TypeError(
                f"the task handler returned {type(outcome).__name__}; expected True (success) "
                "or False (retry)"
            )
        if self._debug:
            logger.info("task %r (work %s): %s", task_name, ctx.id, result.kind.name.lower())
        return result

    def _require(self, operation: str) -> None:
        if not self._initialized:
            raise InvalidRequestError(
                "Workmanager", self, f"call initialize(callback_dispatcher) before {operation}()"
            )

    # -- registering

    @staticmethod
    def _worker(task_name: str) -> str:
        """The worker name of the task ``task_name``."""
        validators.check_name("task_name", task_name)
        return validators.check_name("task_name", WORKER_PREFIX + task_name)

    @staticmethod
    def _tags(tag: str | None) -> frozenset[str]:
        return frozenset({WORKER_NAME} if tag is None else {WORKER_NAME, tag})

    @staticmethod
    def _backoff(policy: BackoffPolicy | str | None, delay: timedelta | float | None) -> Backoff:
        # semantics 35: the plugin applies a backoff only when both are given.
        if policy is None or delay is None:
            return Backoff()
        return Backoff(policy, delay)

    async def register_one_off_task(
        self,
        unique_name: str,
        task_name: str,
        *,
        tag: str | None = None,
        existing_work_policy: ExistingWorkPolicy | str = ExistingWorkPolicy.KEEP,
        initial_delay: timedelta | float = timedelta(0),
        constraints: Constraints | None = None,
        backoff_policy: BackoffPolicy | str | None = None,
        backoff_policy_delay: timedelta | float | None = None,
        input_data: Mapping[str, JSONValue] | None = None,
    ) -> None:
        """Run the task ``task_name`` once, as the work under ``unique_name``.

        :param unique_name: the unique-work name (the plugin's ``uniqueName``)
        :param task_name: the name the handler receives
        :param tag: a tag to cancel by
        :param existing_work_policy: what to do if work under ``unique_name`` exists
            (default KEEP)
        :param initial_delay: how long to wait before the first run
        :param constraints: the conditions the task needs
        :param backoff_policy: with ``backoff_policy_delay``, the retry backoff
        :param backoff_policy_delay: with ``backoff_policy``, the backoff's base delay
        :param input_data: the JSON object the handler receives
        :raises InvalidRequestError: for invalid arguments, or before :meth:`initialize`
        :raises NotRunningError: outside ``async with manager:``
        """
        self._require("register_one_off_task")
        request = OneTimeWorkRequest(
            self._worker(task_name),
            input=input_data,
            tags=self._tags(tag),
            initial_delay=initial_delay,
            constraints=constraints if constraints is not None else Constraints(),
            backoff=self._backoff(backoff_policy, backoff_policy_delay),
        )
        await self._manager.enqueue_unique_work(unique_name, existing_work_policy, request)

    async def register_periodic_task(
        self,
        unique_name: str,
        task_name: str,
        *,
        frequency: timedelta | float = DEFAULT_FREQUENCY,
        flex_interval: timedelta | float | None = None,
        tag: str | None = None,
        existing_work_policy: ExistingPeriodicWorkPolicy | str = ExistingPeriodicWorkPolicy.UPDATE,
        initial_delay: timedelta | float = timedelta(0),
        constraints: Constraints | None = None,
        backoff_policy: BackoffPolicy | str | None = None,
        backoff_policy_delay: timedelta | float | None = None,
        input_data: Mapping[str, JSONValue] | None = None,
    ) -> None:
        """Run the task ``task_name`` every ``frequency`` (default 15 minutes), as the
        work under ``unique_name``.

        :param frequency: the repeat interval
        :param flex_interval: the window at the end of each interval in which it may run
        :param existing_work_policy: what to do if work under ``unique_name`` exists
            (default UPDATE: change it in place)

        The other parameters are those of :meth:`register_one_off_task`.
        """
        self._require("register_periodic_task")
        request = PeriodicWorkRequest(
            self._worker(task_name),
            input=input_data,
            repeat_interval=frequency,
            flex_interval=flex_interval,
            tags=self._tags(tag),
            initial_delay=initial_delay,
            constraints=constraints if constraints is not None else Constraints(),
            backoff=self._backoff(backoff_policy, backoff_policy_delay),
        )
        await self._manager.enqueue_unique_periodic_work(
            unique_name, existing_work_policy, request
        )

    # -- cancelling and asking

    async def cancel_by_unique_name(self, unique_name: str) -> None:
        """Cancel the unfinished work under ``unique_name``."""
        self._require("cancel_by_unique_name")
        await self._manager.cancel_unique_work(unique_name)

    async def cancel_by_tag(self, tag: str) -> None:
        """Cancel every unfinished task with ``tag``."""
        self._require("cancel_by_tag")
        await self._manager.cancel_all_work_by_tag(tag)

    async def cancel_all(self) -> None:
        """Cancel every unfinished task of this facade (other works are left alone)."""
        self._require("cancel_all")
        await self._manager.cancel_all_work_by_tag(WORKER_NAME)

    async def is_scheduled_by_unique_name(self, unique_name: str) -> bool:
        """True iff works exist under ``unique_name`` and every one of them is ENQUEUED or
        RUNNING (semantics 35)."""
        self._require("is_scheduled_by_unique_name")
        infos = await self._manager.get_work_infos(
            WorkQuery(unique_names={validators.check_name("unique_name", unique_name)})
        )
        return bool(infos) and all(info.state in _SCHEDULED for info in infos)


def _show_debug_log() -> None:
    """Debug mode: make the facade's INFO lines visible, on stderr unless the app has
    configured logging (a handler on the ``wm_async.compat`` logger or above it)."""
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if not _has_real_handler(logger):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def _has_real_handler(log: logging.Logger) -> bool:
    """Whether a record of ``log`` reaches a handler that shows it (the library's own
    NullHandler on ``wm_async`` does not count)."""
    current: logging.Logger | None = log
    while current is not None:
        if any(not isinstance(h, logging.NullHandler) for h in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False
