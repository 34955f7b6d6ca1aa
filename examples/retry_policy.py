"""A worker's retry policy: a card charge that hits a rate limit, then two connection
errors, and succeeds on its fourth run (README, "Retry policy per worker").

    python examples/retry_policy.py

Runs on a VirtualClock and a memory store, so the minute of waiting takes no time.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import anyio

import wm_async as wm
from wm_async.testing import VirtualClock

clock = VirtualClock()
manager = wm.WorkManager(store="memory://", clock=clock, shutdown_grace=0)
rate_limited = True
connection_errors = 2


@manager.worker(
    "charge_card",
    retry_on=(ConnectionError, TimeoutError),  # raised: a retry, not a failure
    timeout=timedelta(seconds=20),  # when the request sets none
    backoff=wm.Backoff(wm.BackoffPolicy.LINEAR, timedelta(seconds=5)),
    max_attempts=5,  # when the request sets none
)
async def charge_card(ctx: wm.WorkContext) -> wm.Result | None:
    if rate_limited:
        return wm.Result.retry(delay=timedelta(seconds=60))  # this once, not the backoff
    return await charge(ctx.input)


async def charge(order: Mapping[str, Any]) -> wm.Result:
    global connection_errors
    if connection_errors:
        connection_errors -= 1
        raise ConnectionError("payment gateway unreachable")
    return wm.Result.success({"charged": order["amount"]})


async def main() -> None:
    global rate_limited
    async with manager:
        request = wm.OneTimeWorkRequest("charge_card", input={"amount": 12})
        await manager.enqueue(request)
        await clock.advance(0)
        rate_limited = False
        info = await manager.get_work_info(request.id)
        assert info is not None
        print(f"after run 1: {info.state.value}, due in 60 s (Result.retry(delay=60))")
        await clock.advance(timedelta(seconds=60))  # run 2: ConnectionError, backoff 5·2 s
        await clock.advance(timedelta(seconds=10))  # run 3: ConnectionError, backoff 5·3 s
        await clock.advance(timedelta(seconds=15))  # run 4: success
        done = await manager.get_work_info(request.id)
        assert done is not None
        assert done.state is wm.WorkState.SUCCEEDED, done
        print(f"{done.state.value} after {done.runs_started} runs: {dict(done.output)}")


if __name__ == "__main__":
    anyio.run(main)
