"""The benchmarked systems, by name. Adapters are imported only in the child process that
runs them, so a peer whose package is missing or broken affects nothing else."""

from __future__ import annotations

import importlib

from benchmarks.systems._base import System

#: name -> "module:Class", in the order the report lists them
SYSTEMS: dict[str, str] = {
    "raw-asyncio": "raw:RawAsyncio",
    "wm-memory": "wm:WmMemory",
    "wm-sqlite": "wm:WmSQLite",
    "wm-postgres": "wm:WmPostgres",
    "apscheduler3-memory": "apscheduler3:APSMemory",
    "apscheduler3-sqlite": "apscheduler3:APSSQLite",
    "huey-memory": "huey_:HueyMemory",
    "huey-sqlite": "huey_:HueySQLite",
    "taskiq-memory": "taskiq_:TaskiqMemory",
    "arq-redis": "arq_:ArqRedis",
    "saq-redis": "saq_:SaqRedis",
    "taskiq-redis": "taskiq_:TaskiqRedis",
    "procrastinate-pg": "procrastinate_:Procrastinate",
}


def load(name: str) -> type[System]:
    module, cls = SYSTEMS[name].split(":")
    return getattr(importlib.import_module(f"benchmarks.systems.{module}"), cls)  # type: ignore[no-any-return]
