"""The test driver: short-cuts a running manager's waiting (re-exported by
:mod:`wm_async.testing`)."""

from __future__ import annotations

import uuid

import attrs

from .._api.manager import WorkManager
from .._core import lifecycle, validators
from .._core.errors import InvalidRequestError
from .._core.model import WorkInfo

__all__ = ("TestDriver",)


@attrs.define(eq=False)
class TestDriver:
    """Short-cuts WorkManager's waiting in tests, as ``androidx.work.testing.TestDriver``.

    The constructor's arguments (attrs writes ``__init__``):

    - ``manager``: a started manager
    """

    __test__ = False  # not a pytest test class

    manager: WorkManager

    async def set_initial_delay_met(self, work_id: uuid.UUID | str) -> WorkInfo:
        """Make an ENQUEUED work due now, as if its initial delay (or backoff) passed."""
        self.manager._require("set_initial_delay_met")
        return await self.manager._apply_one(
            work_id, lambda record, now: lifecycle.delay_met(record, now=now)
        )

    async def set_period_delay_met(self, work_id: uuid.UUID | str) -> WorkInfo:
        """Make a periodic work's current period due now, as if its interval passed."""
        self.manager._require("set_period_delay_met")
        return await self.manager._apply_one(
            work_id, lambda record, now: lifecycle.delay_met(record, now=now)
        )

    async def set_all_constraints_met(self, work_id: uuid.UUID | str) -> WorkInfo:
        """Treat every constraint of the work as met from now on: it may start whatever
        its signals say, and losing a signal no longer stops it."""
        manager = self.manager
        manager._require("set_all_constraints_met")
        key = str(validators.to_uuid("id", work_id))
        found = await manager.store.get([key])
        if not found:
            raise InvalidRequestError("id", work_id, "no such work")
        manager._hooks.constraints_met.add(key)
        manager._scheduler.wake()
        return found[0].to_info()
