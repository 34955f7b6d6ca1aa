"""The Flutter workmanager plugin's usage, ported to wm_async's facade.

The plugin's README registers a callback dispatcher that hands a task handler to
``executeTask``, initializes the plugin with it, then registers a one-off task and a
periodic one. The same here, line for line, with Python names::

    python examples/flutter_style.py

It runs both tasks once (a periodic task's first run is due at once), prints what the
handler saw, and exits.
"""

from __future__ import annotations

import os
from datetime import timedelta

import anyio

import wm_async as wm
from wm_async.compat import Workmanager

manager = wm.WorkManager(store=os.environ.get("WM_ASYNC_STORE", "sqlite:///flutter_style.db"))
workmanager = Workmanager(manager)

simple_task_key = "simpleTask"
simple_periodic_task = "simplePeriodicTask"
failing_task = "failingTask"


def callback_dispatcher() -> None:
    workmanager.execute_task(task_handler)


async def task_handler(task: str, input_data: dict[str, wm.JSONValue]) -> bool:
    if task == simple_task_key:
        print(f"{simple_task_key} was executed. input_data = {input_data}")
    elif task == simple_periodic_task:
        print(f"{simple_periodic_task} was executed")
    elif task == failing_task:
        raise RuntimeError("this task always fails")  # the work becomes FAILED
    return True  # True: success; False: retry later with the backoff


async def main() -> None:
    workmanager.initialize(callback_dispatcher, is_in_debug_mode=True)
    async with manager:
        await workmanager.register_one_off_task(
            "task-identifier",
            simple_task_key,
            input_data={"int": 1, "bool": True, "string": "string", "array": [1, 2, 3]},
        )
        await workmanager.register_periodic_task(
            "periodic-task-identifier",
            simple_periodic_task,
            frequency=timedelta(minutes=15),
            constraints=wm.Constraints(required_network=wm.NetworkType.NOT_REQUIRED),
        )
        await workmanager.register_one_off_task("failing-identifier", failing_task)

        # Wait until each task has run once: the one-offs finish, the periodic one
        # starts its second period.
        with anyio.fail_after(30):
            async with manager.watch(wm.WorkQuery(tags={"wm_async.compat"})) as infos:
                done: set[str] = set()
                async for info in infos:
                    if info.is_finished or info.period_count > 0:
                        done.add(str(info.unique_name))
                        print(f"  {info.unique_name}: {info.state.value}")
                    if len(done) == 3:
                        break
        print(
            "periodic task scheduled:",
            await workmanager.is_scheduled_by_unique_name("periodic-task-identifier"),
        )
        await workmanager.cancel_by_unique_name("periodic-task-identifier")


if __name__ == "__main__":
    anyio.run(main)
