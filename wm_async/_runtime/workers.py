"""The workers a manager runs, by name, and worker *families*."""

from __future__ import annotations

from .._core.policy import WorkerPolicy
from .executor import Worker, WorkerFn


class WorkerTable(dict[str, Worker]):
    """Worker name -> worker, and worker *families*: every name that begins with a
    family's prefix (and goes on) runs that family's function. The Flutter facade runs
    each task under a worker name of its own, ``wm_async.compat:<task name>``, with one
    function.

    A plain dict for the registered names, so the lookup of every run costs what a dict
    lookup does; a family member is found by :meth:`member` when that lookup misses
    (and is then kept, so its next runs are found at once).
    """

    def __init__(self, workers: dict[str, Worker]) -> None:
        super().__init__(workers)
        #: prefix -> the family's function and policy
        self.families: dict[str, tuple[WorkerFn, WorkerPolicy]] = {}

    def member(self, name: str) -> Worker | None:
        """The worker of a family member ``name`` (None if no family has it)."""
        for prefix, (fn, policy) in self.families.items():
            if name.startswith(prefix) and len(name) > len(prefix):
                worker = self[name] = Worker.wrap(name, fn, policy)
                return worker
        return None

    def find(self, name: str) -> Worker | None:
        """The worker that runs works of ``name``: registered, or a family member."""
        found = self.get(name)
        return self.member(name) if found is None else found
