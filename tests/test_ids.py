"""Work ids: version-7 UUIDs, unique, ordered by creation, never shared with a fork."""

from __future__ import annotations

import os
import sys
import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

import wm_async as wm
from wm_async._core.record import (
    WorkRecord,
    id_text,
)

_RANDOM_BITS = (1 << 62) - 1


def test_new_ids_are_version_7_uuids_stamped_with_the_current_time() -> None:
    before_ms = time.time_ns() // 1_000_000
    work_id = wm.OneTimeWorkRequest("w").id
    after_ms = time.time_ns() // 1_000_000
    assert work_id.version == 7
    assert work_id.variant == uuid.RFC_4122
    assert uuid.UUID(str(work_id)) == work_id
    assert before_ms <= work_id.int >> 80 <= after_ms


def test_ids_are_unique_and_sort_in_the_order_they_were_made() -> None:
    ids = [wm.OneTimeWorkRequest("w").id for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    texts = [str(i) for i in ids]
    assert texts == sorted(texts)  # stores index the text form
    # the random part is not a counter
    assert len({i.int & _RANDOM_BITS for i in ids}) == len(ids)


def test_periodic_requests_get_the_same_kind_of_id() -> None:
    request = wm.PeriodicWorkRequest("w", repeat_interval=60)
    assert request.id.version == 7


def test_a_given_id_is_kept() -> None:
    mine = uuid.uuid4()
    assert wm.OneTimeWorkRequest("w", id=mine).id == mine
    assert wm.OneTimeWorkRequest("w", id=str(mine)).id == mine


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork")
def test_a_forked_child_does_not_reuse_the_parents_random_bits() -> None:
    wm.OneTimeWorkRequest("w")  # the parent now holds a buffer of random bits
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            text = ",".join(str(wm.OneTimeWorkRequest("w").id) for _ in range(50))
            os.write(write, text.encode())
        finally:
            os._exit(0)
    os.close(write)
    parent = [wm.OneTimeWorkRequest("w").id for _ in range(50)]
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = [uuid.UUID(t) for t in b"".join(chunks).decode().split(",")]
    assert len(child) == 50
    assert not {i.int & _RANDOM_BITS for i in parent} & {i.int & _RANDOM_BITS for i in child}


@given(st.uuids() | st.integers(0, (1 << 128) - 1).map(lambda i: uuid.UUID(int=i)))
def test_a_work_is_stored_under_its_ids_canonical_text(work_id: uuid.UUID) -> None:
    # Stores key works by this text; it must be exactly str(uuid), or an id given by
    # the app would not find its work.
    assert id_text(work_id) == str(work_id)
    record = WorkRecord.from_request(wm.OneTimeWorkRequest("w", id=work_id), now=0.0)
    assert record.id == str(work_id)
