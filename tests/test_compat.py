"""The Flutter-plugin facade (semantics 35) on the virtual clock: the plugin's usage
ported, the handler's True/False/None/exception mapped to success/retry/retry/failure,
the plugin's defaults, and ``is_scheduled_by_unique_name``."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

import wm_async as wm
from wm_async.compat import (
    TASK_NAME_KEY,
    WORKER_NAME,
    WORKER_PREFIX,
    Workmanager,
)
from wm_async.testing import VirtualClock

MakeManager = Callable[..., wm.WorkManager]
Calls = list[tuple[str, dict[str, wm.JSONValue]]]


class Plugin:
    """The plugin's README usage, ported: a dispatcher hands a handler over; what the
    handler returns comes from ``input_data["answer"]`` ("true", "false", "none",
    "raise")."""

    def __init__(self, manager: wm.WorkManager) -> None:
        self.manager = manager
        self.workmanager = Workmanager(manager)
        self.calls: Calls = []

    def callback_dispatcher(self) -> None:
        self.workmanager.execute_task(self.task_handler)

    async def task_handler(self, task_name: str, input_data: dict[str, wm.JSONValue]) -> bool:
        self.calls.append((task_name, input_data))
        answer = input_data.get("answer", "true")
        if answer == "raise":
            raise ConnectionError("server down")
        if answer == "none":
            return None  # type: ignore[return-value]  # the plugin's null
        return answer == "true"

    async def info(self, unique_name: str) -> wm.WorkInfo:
        [info] = await self.manager.get_work_infos(wm.WorkQuery(unique_names={unique_name}))
        return info


@pytest.fixture
def plugin(make_manager: MakeManager) -> Plugin:
    """The ported plugin usage, initialized; each test runs it in ``async with``."""
    plugin = Plugin(make_manager())
    plugin.workmanager.initialize(plugin.callback_dispatcher)
    return plugin


async def test_periodic_task_runs_every_15_minutes(plugin: Plugin, clock: VirtualClock) -> None:
    async with plugin.manager:
        await plugin.workmanager.register_periodic_task(
            "periodic-task-identifier", "simplePeriodicTask", input_data={"n": 1}
        )
        await clock.advance(0)
        assert plugin.calls == [("simplePeriodicTask", {"n": 1})]  # the first period: at once

        await clock.advance(timedelta(minutes=14, seconds=59))
        assert len(plugin.calls) == 1
        await clock.advance(timedelta(seconds=1))
        assert len(plugin.calls) == 2

        info = await plugin.info("periodic-task-identifier")
        assert info.state is wm.WorkState.ENQUEUED
        assert info.period_count == 2
        assert info.periodicity is not None
        assert info.periodicity.interval == timedelta(minutes=15)
        assert await plugin.workmanager.is_scheduled_by_unique_name("periodic-task-identifier")


async def test_true_is_success(plugin: Plugin, clock: VirtualClock) -> None:
    async with plugin.manager:
        await plugin.workmanager.register_one_off_task(
            "task-identifier", "simpleTask", input_data={"answer": "true", "int": 1}
        )
        await clock.advance(0)

        assert plugin.calls == [("simpleTask", {"answer": "true", "int": 1})]  # no task-name key
        info = await plugin.info("task-identifier")
        assert info.state is wm.WorkState.SUCCEEDED
        assert not await plugin.workmanager.is_scheduled_by_unique_name("task-identifier")


@pytest.mark.parametrize("answer", ["false", "none"])
async def test_false_or_none_is_retry_with_the_default_backoff(
    plugin: Plugin, clock: VirtualClock, answer: str
) -> None:
    async with plugin.manager:
        await plugin.workmanager.register_one_off_task(
            "task-identifier", "simpleTask", input_data={"answer": answer}
        )
        await clock.advance(0)

        info = await plugin.info("task-identifier")
        assert info.state is wm.WorkState.ENQUEUED
        assert info.run_attempt_count == 1
        assert info.next_schedule_time is not None
        assert info.next_schedule_time.timestamp() - clock.now() == 30  # EXPONENTIAL, 30 s
        assert await plugin.workmanager.is_scheduled_by_unique_name("task-identifier")

        await clock.advance(30)
        assert len(plugin.calls) == 2


async def test_exception_is_failure(plugin: Plugin, clock: VirtualClock) -> None:
    async with plugin.manager:
        await plugin.workmanager.register_one_off_task(
            "task-identifier", "simpleTask", input_data={"answer": "raise"}
        )
        await clock.advance(0)

        info = await plugin.info("task-identifier")
        assert info.state is wm.WorkState.FAILED
        assert info.error == wm.WorkError(type="ConnectionError", message="server down")
        assert not await plugin.workmanager.is_scheduled_by_unique_name("task-identifier")


async def test_backoff_applies_only_when_policy_and_delay_are_both_given(
    plugin: Plugin, clock: VirtualClock
) -> None:
    async with plugin.manager:
        wmgr = plugin.workmanager
        retry = {"answer": "false"}
        await wmgr.register_one_off_task(
            "both",
            "t",
            input_data=retry,
            backoff_policy=wm.BackoffPolicy.LINEAR,
            backoff_policy_delay=timedelta(seconds=10),
        )
        await wmgr.register_one_off_task(
            "policy-only", "t", input_data=retry, backoff_policy=wm.BackoffPolicy.LINEAR
        )
        await wmgr.register_one_off_task(
            "delay-only", "t", input_data=retry, backoff_policy_delay=10
        )
        await clock.advance(0)

        async def wait_of(name: str) -> float:
            due = (await plugin.info(name)).next_schedule_time
            assert due is not None
            return due.timestamp() - clock.now()

        assert await wait_of("both") == 10
        assert await wait_of("policy-only") == 30
        assert await wait_of("delay-only") == 30


async def test_default_policies_keep_one_off_and_update_periodic(
    plugin: Plugin, clock: VirtualClock
) -> None:
    async with plugin.manager:
        wmgr = plugin.workmanager
        await wmgr.register_one_off_task(
            "once", "first", initial_delay=timedelta(hours=1), input_data={"v": 1}
        )
        await wmgr.register_one_off_task("once", "second", input_data={"v": 2})  # KEEP: ignored
        once = await plugin.info("once")
        assert once.input == {"v": 1}
        assert once.worker == "wm_async.compat:first"

        await wmgr.register_periodic_task("every", "tick", frequency=timedelta(hours=1))
        before = await plugin.info("every")
        await wmgr.register_periodic_task(
            "every", "tick", frequency=timedelta(hours=2), input_data={"v": 2}
        )
        after = await plugin.info("every")  # UPDATE: the same work, changed in place
        assert after.id == before.id
        assert after.generation == before.generation + 1
        assert after.periodicity is not None
        assert after.periodicity.interval == timedelta(hours=2)

        await wmgr.register_one_off_task(
            "once", "third", existing_work_policy=wm.ExistingWorkPolicy.REPLACE
        )
        third = await plugin.info("once")
        assert (third.worker, third.input) == ("wm_async.compat:third", {})


async def test_cancel_by_unique_name_tag_and_all(plugin: Plugin, clock: VirtualClock) -> None:
    async with plugin.manager:
        wmgr = plugin.workmanager
        later = timedelta(hours=1)
        await wmgr.register_one_off_task("a", "t", tag="sync", initial_delay=later)
        await wmgr.register_one_off_task("b", "t", tag="sync", initial_delay=later)
        await wmgr.register_one_off_task("c", "t", initial_delay=later)
        await wmgr.register_periodic_task("d", "t", initial_delay=later)

        @plugin.manager.worker("native")
        async def native(ctx: wm.WorkContext) -> None: ...

        other = wm.OneTimeWorkRequest("native", initial_delay=later)
        await plugin.manager.enqueue(other)

        await wmgr.cancel_by_unique_name("a")
        assert (await plugin.info("a")).state is wm.WorkState.CANCELLED
        assert not await wmgr.is_scheduled_by_unique_name("a")
        await wmgr.cancel_by_tag("sync")
        assert (await plugin.info("b")).state is wm.WorkState.CANCELLED
        assert await wmgr.is_scheduled_by_unique_name("c")
        await wmgr.cancel_all()
        assert (await plugin.info("c")).state is wm.WorkState.CANCELLED
        assert (await plugin.info("d")).state is wm.WorkState.CANCELLED

        native_info = await plugin.manager.get_work_info(other.id)
        assert native_info is not None
        assert native_info.state is wm.WorkState.ENQUEUED  # not the facade's: left alone
        assert not await wmgr.is_scheduled_by_unique_name("never-registered")


async def test_each_task_runs_as_a_worker_named_after_it(
    plugin: Plugin, clock: VirtualClock
) -> None:
    async with plugin.manager:
        await plugin.workmanager.register_one_off_task("x", "simpleTask", tag="mine")
        await plugin.workmanager.register_periodic_task("p", "tick")
        info = await plugin.info("x")
        periodic = await plugin.info("p")
        await clock.advance(timedelta(0))

        # what `wm-async list`, the logs and statistics show: the task name
        assert info.worker == f"{WORKER_PREFIX}simpleTask"
        assert info.tags == {WORKER_NAME, f"{WORKER_PREFIX}simpleTask", "mine"}
        assert periodic.worker == f"{WORKER_PREFIX}tick"
        assert (await plugin.info("x")).state is wm.WorkState.SUCCEEDED
        assert plugin.calls == [("simpleTask", {}), ("tick", {})]
        assert plugin.manager.statistics()["workers"] == [
            WORKER_NAME,
            f"{WORKER_PREFIX}simpleTask",
            f"{WORKER_PREFIX}tick",
        ]


async def test_tasks_stored_by_an_earlier_version_still_run(
    plugin: Plugin, clock: VirtualClock
) -> None:
    # Before: worker "wm_async.compat", the task name in the input.
    old = wm.OneTimeWorkRequest(WORKER_NAME, input={TASK_NAME_KEY: "legacy", "n": 1})
    async with plugin.manager:
        await plugin.manager.enqueue(old)
        await clock.advance(timedelta(0))
        info = await plugin.manager.get_work_info(old.id)

    assert info is not None
    assert info.state is wm.WorkState.SUCCEEDED
    assert plugin.calls == [("legacy", {"n": 1})]


@pytest.fixture
def compat_logger() -> Iterator[logging.Logger]:
    """The facade's logger, as it was before the test (debug mode adds a handler)."""
    logger = logging.getLogger("wm_async.compat")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


async def test_debug_mode_prints_without_logging_configured(
    make_manager: MakeManager,
    clock: VirtualClock,
    compat_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No handler anywhere (as in a script that never configured logging).
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    plugin = Plugin(make_manager())
    plugin.workmanager.initialize(plugin.callback_dispatcher, is_in_debug_mode=True)
    async with plugin.manager:
        await plugin.workmanager.register_one_off_task("x", "simpleTask")
        await clock.advance(timedelta(0))

    err = capsys.readouterr().err
    assert re.search(
        r"wm_async.compat: task 'simpleTask' \(work [0-9a-f-]+\) starting, run 1", err
    )
    assert re.search(r"wm_async.compat: task 'simpleTask' \(work [0-9a-f-]+\): success", err)


async def test_debug_mode_leaves_configured_logging_alone(
    make_manager: MakeManager,
    clock: VirtualClock,
    compat_logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugin = Plugin(make_manager())
    plugin.workmanager.initialize(plugin.callback_dispatcher, is_in_debug_mode=True)
    async with plugin.manager:
        await plugin.workmanager.register_one_off_task("x", "simpleTask")
        await clock.advance(timedelta(0))

    assert compat_logger.handlers == []  # pytest's handlers are configured: none added
    assert "task 'simpleTask'" not in capsys.readouterr().err
    assert any("task 'simpleTask'" in r.getMessage() for r in caplog.records)


async def test_sync_handler_runs_in_a_thread(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    workmanager = Workmanager(manager)
    seen: list[str] = []

    def handler(task_name: str, input_data: dict[str, wm.JSONValue]) -> bool:
        seen.append(task_name)
        return True

    workmanager.initialize(lambda: workmanager.execute_task(handler))
    async with manager:
        await workmanager.register_one_off_task("s", "syncTask")
        [enqueued] = await manager.get_work_infos(wm.WorkQuery(unique_names={"s"}))
        # A thread is not something the virtual clock waits for: wait for the work.
        with anyio.fail_after(10):
            info = await manager.wait(enqueued.id)

    assert seen == ["syncTask"]
    assert info.state is wm.WorkState.SUCCEEDED


async def test_a_handler_returning_something_else_fails_the_task(
    make_manager: MakeManager, clock: VirtualClock
) -> None:
    manager = make_manager()
    workmanager = Workmanager(manager)

    async def handler(task_name: str, input_data: dict[str, wm.JSONValue]) -> bool:
        return "yes"  # type: ignore[return-value]

    workmanager.initialize(lambda: workmanager.execute_task(handler))
    async with manager:
        await workmanager.register_one_off_task("s", "t")
        await clock.advance(0)
        [info] = await manager.get_work_infos(wm.WorkQuery(unique_names={"s"}))

    assert info.state is wm.WorkState.FAILED
    assert info.error is not None
    assert info.error.type == "TypeError"
    assert "returned str; expected True (success) or False (retry)" in info.error.message


async def test_misuse_is_reported(make_manager: MakeManager) -> None:
    manager = make_manager()
    workmanager = Workmanager(manager)

    with pytest.raises(wm.InvalidRequestError, match="expected a WorkManager"):
        Workmanager("memory://")  # type: ignore[arg-type]
    async with manager:
        with pytest.raises(
            wm.InvalidRequestError, match=r"call initialize\(callback_dispatcher\)"
        ):
            await workmanager.register_one_off_task("a", "t")
    with pytest.raises(wm.InvalidRequestError, match=r"must call workmanager.execute_task"):
        workmanager.initialize(lambda: None)
    with pytest.raises(wm.InvalidRequestError, match="expected a function"):
        workmanager.execute_task("handler")  # type: ignore[arg-type]

    workmanager.initialize(lambda: workmanager.execute_task(lambda name, data: True))
    with pytest.raises(wm.InvalidRequestError, match="already initialized"):
        workmanager.initialize(lambda: None)
    async with manager:
        with pytest.raises(wm.InvalidRequestError, match="task_name"):
            await workmanager.register_one_off_task("a", "t" * 1000)


def test_the_ported_example_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "flutter_style.py"
    spec = importlib.util.spec_from_file_location("wm_async_example_flutter_style", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("WM_ASYNC_STORE", f"sqlite:///{tmp_path / 'flutter.db'}")
    try:
        spec.loader.exec_module(example)
        anyio.run(example.main)
    finally:
        monkeypatch.undo()
        del sys.modules[spec.name]

    out = capsys.readouterr().out
    assert "simpleTask was executed. input_data = {'int': 1, 'bool': True" in out
    assert "simplePeriodicTask was executed" in out
    assert "task-identifier: SUCCEEDED" in out
    assert "failing-identifier: FAILED" in out
    assert "periodic task scheduled: True" in out
