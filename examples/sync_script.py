"""A cron script or management command on SyncClient: enqueue, wait, done (README,
"From synchronous code").

    python examples/sync_script.py

A worker process would normally run the work (``wm-async worker``); here a manager in a
thread of this process stands in for it, on the same SQLite file (``wm.db`` in the
current folder).
"""

from __future__ import annotations

import threading

import anyio

import wm_async as wm

worker_side = wm.WorkManager(store="sqlite:///wm.db", shutdown_grace=1)
stop = threading.Event()


@worker_side.worker("rebuild_index")
async def rebuild_index(ctx: wm.WorkContext) -> wm.Result:
    return wm.Result.success({"documents": 3})


async def run_worker_side() -> None:
    async with worker_side:
        while not stop.is_set():  # noqa: ASYNC110 (a threading.Event, set by main())
            await anyio.sleep(0.05)


def main() -> None:
    thread = threading.Thread(target=anyio.run, args=(run_worker_side,))
    thread.start()
    try:
        with wm.SyncClient("sqlite:///wm.db") as client:
            request = wm.OneTimeWorkRequest("rebuild_index")
            client.enqueue(request)
            info = client.wait(request.id, timeout=600)  # TimeoutError if it takes longer
        print(info.state.value, dict(info.output))
        assert info.state is wm.WorkState.SUCCEEDED
    finally:
        stop.set()
        thread.join()


if __name__ == "__main__":
    main()
