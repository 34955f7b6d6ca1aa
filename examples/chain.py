"""A chain: download two pages in parallel, count their words, then report.

    python examples/chain.py

Each step waits for the one before it; a step's input is its own input merged with the
outputs of the step before (here with ArrayCreatingInputMerger, so the counts arrive as
a list). The chain is stored in a SQLite file in a temporary directory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio

import wm_async as wm


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        manager = wm.WorkManager(f"sqlite:///{Path(folder) / 'chain.db'}")

        @manager.worker("fetch")
        async def fetch(ctx: wm.WorkContext) -> wm.Result:
            url = ctx.input["url"]
            await anyio.sleep(0.1)  # stands in for an HTTP request
            return wm.Result.success({"words": len(str(url)) * 10})

        @manager.worker("report")
        async def report(ctx: wm.WorkContext) -> wm.Result:
            counts = ctx.input["words"]
            assert isinstance(counts, list)
            total = sum(c for c in counts if isinstance(c, int))
            return wm.Result.success({"total": total})

        pages = [
            wm.OneTimeWorkRequest("fetch", input={"url": "https://example.org/a"}),
            wm.OneTimeWorkRequest("fetch", input={"url": "https://example.org/bb"}),
        ]
        summary = wm.OneTimeWorkRequest("report", input_merger=wm.ArrayCreatingInputMerger)
        async with manager:
            chain = manager.begin_with(*pages).then(summary)
            await chain.enqueue()
            for info in await chain.get_work_infos():
                print(f"{info.worker:7} {info.state.value}")
            done = await manager.wait(summary.id)
            print(f"report {done.state.value}: input {dict(done.input)} -> {dict(done.output)}")


if __name__ == "__main__":
    anyio.run(main)
