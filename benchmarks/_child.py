"""Runs one workload on one system in this (child) process and prints the figures.

    python -m benchmarks._child SYSTEM WORKLOAD PARAMS_JSON

The last stdout line starting with ``@@result`` is the outcome, as JSON: ``{"ok": {…}}``,
``{"skipped": reason}`` or ``{"unsupported": reason}``. Anything else (a traceback) means
the system failed; the parent reports it as an error and goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from benchmarks.systems import load
from benchmarks.systems._base import Skip, Tracker
from benchmarks.workloads import WORKLOADS

MARK = "@@result "


def main(argv: list[str]) -> dict[str, object]:
    name, workload, params_json = argv
    params = json.loads(params_json)
    cls = load(name)  # an ImportError here is reported by the parent as an error
    if workload in cls.unsupported:
        return {"unsupported": cls.unsupported[workload]}
    system = cls(Tracker(), params)
    try:
        system.check()
    except Skip as exc:
        return {"skipped": str(exc)}
    if workload == "check":
        return {"ok": {"label": cls.label, "kind": cls.kind, "unsupported": cls.unsupported}}
    system.prepare()
    try:
        return {"ok": asyncio.run(WORKLOADS[workload](system, params))}
    finally:
        system.cleanup()


if __name__ == "__main__":
    # Peers log every job at INFO; only problems are worth seeing.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    outcome = main(sys.argv[1:])
    sys.stdout.write(MARK + json.dumps(outcome) + "\n")
    sys.stdout.flush()
