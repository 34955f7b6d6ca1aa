"""PostgresStore.apply's transaction: a batch of guarded changes in one round trip when
it can be, in the full transaction of ``Transactions.write_and_propagate`` otherwise.

The one round trip is the server-side function ``wm_apply`` (migration 006),
autocommitted: the compare-and-set UPDATE, its NOTIFY and the check for BLOCKED
dependents of the works it finished. When there are some (or a work's spec was updated
meanwhile), the function raises ``WMA01``, its writes are rolled back, and the batch
runs the full transaction on the same connection: BEGIN, the UPDATE, the propagation
level by level, COMMIT. A retry after an attempt whose answer was lost always runs the
full transaction, which recognises that attempt's write by its token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import asyncpg

from ._codec import runtime_params

if TYPE_CHECKING:
    from .._core.lifecycle import Change
    from .._core.record import WorkRecord
    from ._postgres_ops import Transactions, Write

_Conn = Any  # asyncpg.Connection (asyncpg ships no type information)

#: The SQLSTATE ``wm_apply`` raises when the batch needs the full transaction.
FULL_TRANSACTION: Final = "WMA01"


def one_round(changes: Sequence[Change], write: Write) -> bool:
    """Whether ``changes`` may go through ``wm_apply``: every work changed once, and no
    earlier attempt of ``write`` may have committed (that needs recognising)."""
    if write.uncertain:
        return False
    return len({c.before.id for c in changes}) == len(changes)


async def apply(
    ops: Transactions, conn: _Conn, changes: Sequence[Change], write: Write
) -> tuple[list[WorkRecord | None], list[tuple[int, WorkRecord]]]:
    """Apply ``changes`` on ``conn`` (not in a transaction): what
    ``Transactions.write_and_propagate`` returns, in one round trip when nothing needs
    the full transaction."""
    if one_round(changes, write):
        rows = [
            (c.before.id, c.before.state._value_, c.before.run_attempt_count, c.before.owner,
             *runtime_params(c.after))
            for c in changes
        ]  # fmt: skip
        arrays = {f"a{k}": list(col) for k, col in enumerate(zip(*rows, strict=True))}
        generations = [c.after.generation for c in changes]
        statement = ops.sql.apply_fast
        args = statement.args(
            **arrays, generations=generations, token=write.token, **ops.notify_args()
        )
        try:
            found = await conn.fetch(statement.text, *args)
        except asyncpg.PostgresError as exc:
            if getattr(exc, "sqlstate", None) != FULL_TRANSACTION:
                raise
        else:
            ok = {row[0] for row in found}
            return [c.after if c.before.id in ok else None for c in changes], []
    async with conn.transaction():
        return await ops.write_and_propagate(conn, changes, write)
