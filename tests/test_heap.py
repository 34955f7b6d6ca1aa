"""DueHeap: keys ordered by due time, with lazy invalidation."""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wm_async._core import heap as _heap
from wm_async._core.heap import DueHeap


def drain(heap: DueHeap[str]) -> list[tuple[float, str]]:
    out = []
    while heap:
        out.append(heap.pop())
    return out


def test_empty() -> None:
    heap: DueHeap[str] = DueHeap()
    assert len(heap) == 0
    assert not heap
    assert "a" not in heap
    assert heap.peek() is None
    with pytest.raises(IndexError):
        heap.pop()


def test_pops_in_due_order() -> None:
    heap: DueHeap[str] = DueHeap()
    for key, due in [("c", 30.0), ("a", 10.0), ("d", 40.0), ("b", 20.0)]:
        heap.push(key, due)
    assert len(heap) == 4
    assert heap.peek() == (10.0, "a")
    assert drain(heap) == [(10.0, "a"), (20.0, "b"), (30.0, "c"), (40.0, "d")]
    assert heap.peek() is None


def test_equal_due_times_pop_in_push_order() -> None:
    heap: DueHeap[str] = DueHeap()
    for key in ["z", "a", "m"]:
        heap.push(key, 5.0)
    assert [key for _, key in drain(heap)] == ["z", "a", "m"]


def test_peek_does_not_remove() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 1.0)
    assert heap.peek() == (1.0, "a")
    assert heap.peek() == (1.0, "a")
    assert len(heap) == 1
    assert "a" in heap


def test_pop_removes_the_key() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 1.0)
    heap.push("b", 2.0)
    assert heap.pop() == (1.0, "a")
    assert "a" not in heap
    assert len(heap) == 1


@pytest.mark.parametrize("new_due", [0.5, 15.0, 99.0], ids=["earlier", "between", "later"])
def test_repush_replaces_the_old_entry(new_due: float) -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 10.0)
    heap.push("b", 20.0)
    heap.push("a", new_due)
    assert len(heap) == 2
    popped = drain(heap)
    assert popped == sorted([(new_due, "a"), (20.0, "b")])
    # the old entry (10.0, "a") never comes back
    assert heap.peek() is None


def test_repush_then_pop_then_old_entry_stays_dead() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 1.0)
    heap.push("a", 3.0)
    heap.push("b", 2.0)
    assert heap.pop() == (2.0, "b")
    assert heap.pop() == (3.0, "a")
    assert heap.peek() is None
    # pushing the key again later makes only the new entry live
    heap.push("a", 4.0)
    assert drain(heap) == [(4.0, "a")]


def test_discard() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 1.0)
    heap.push("b", 2.0)
    heap.discard("a")
    assert "a" not in heap
    assert len(heap) == 1
    assert heap.peek() == (2.0, "b")
    assert drain(heap) == [(2.0, "b")]


def test_discard_missing_key_is_a_no_op() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 1.0)
    heap.discard("zzz")
    heap.discard("a")
    heap.discard("a")
    assert len(heap) == 0
    assert heap.peek() is None


def test_discard_then_repush() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 1.0)
    heap.discard("a")
    heap.push("a", 5.0)
    heap.push("b", 3.0)
    assert drain(heap) == [(3.0, "b"), (5.0, "a")]


def test_contains_accepts_any_object() -> None:
    heap: DueHeap[str] = DueHeap()
    heap.push("a", 1.0)
    assert "a" in heap
    assert 1 not in heap


def test_many_discards_and_reschedules_stay_correct_and_bounded() -> None:
    """Cancel and reschedule most of 5,000 keys, many times over: the order is still
    right, and stale entries are pruned rather than kept forever."""
    heap: DueHeap[int] = DueHeap()
    live: dict[int, float] = {}
    n = 5_000
    for key in range(n):
        heap.push(key, float(key))
        live[key] = float(key)
    for round_ in range(1, 6):
        for key in range(n):
            if key % 10 == round_ % 10:
                heap.discard(key)
                live.pop(key, None)
            else:
                due = float((key * 7919 + round_) % n)
                heap.push(key, due)
                live[key] = due
        assert len(heap) == len(live)
    # White-box: the stored entries stay within the rebuild bound (trio's Deadlines rule).
    assert len(heap._heap) + len(heap._fifo) <= 2 * len(live) + _heap._REBUILD_THRESHOLD
    popped = []
    while heap:
        due, key = heap.pop()
        popped.append((due, key))
        assert live.pop(key) == due
    assert live == {}
    assert [due for due, _ in popped] == sorted(due for due, _ in popped)


# -- model-based property test

_KEYS = st.integers(min_value=0, max_value=15)
_DUES = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), _KEYS, _DUES),
        st.tuples(st.just("discard"), _KEYS, st.just(0.0)),
        st.tuples(st.just("pop"), st.just(0), st.just(0.0)),
        st.tuples(st.just("peek"), st.just(0), st.just(0.0)),
    ),
    max_size=200,
)


class Model:
    """The obvious implementation: a dict of key → (due, push order)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[float, int]] = {}
        self.pushes = 0

    def push(self, key: int, due: float) -> None:
        self.pushes += 1
        self.entries[key] = (due, self.pushes)

    def first(self) -> tuple[float, int] | None:
        if not self.entries:
            return None
        key = min(self.entries, key=lambda k: self.entries[k])
        return self.entries[key][0], key


@pytest.mark.parametrize("threshold", [0, 3, 1000], ids=lambda t: f"rebuild-threshold-{t}")
@settings(max_examples=300, deadline=None)
@given(ops=_OPS)
def test_matches_a_dict_model(threshold: int, ops: list[tuple[str, int, float]]) -> None:
    # A low threshold makes the rebuild happen all the time, so it is exercised too.
    with mock.patch.object(_heap, "_REBUILD_THRESHOLD", threshold):
        heap: DueHeap[int] = DueHeap()
        model = Model()
        for op, key, due in ops:
            if op == "push":
                heap.push(key, due)
                model.push(key, due)
            elif op == "discard":
                heap.discard(key)
                model.entries.pop(key, None)
            elif op == "peek":
                assert heap.peek() == model.first()
            else:
                expected = model.first()
                if expected is None:
                    with pytest.raises(IndexError):
                        heap.pop()
                else:
                    assert heap.pop() == expected
                    del model.entries[expected[1]]
            assert len(heap) == len(model.entries)
            for k in range(16):
                assert (k in heap) == (k in model.entries)
        # everything left comes out in order, each key once
        rest = []
        while heap:
            rest.append(heap.pop())
        expected_rest = sorted(model.entries.items(), key=lambda item: item[1])
        assert rest == [(due, key) for key, (due, _) in expected_rest]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(st.tuples(_KEYS, _DUES, st.booleans()), max_size=60),
    now=_DUES,
    limit=st.integers(min_value=0, max_value=20),
)
def test_pop_due_matches_peek_and_pop(
    ops: list[tuple[int, float, bool]], now: float, limit: int
) -> None:
    """pop_due(now, limit) takes exactly what peek/pop in a loop would take."""
    one: DueHeap[int] = DueHeap()
    other: DueHeap[int] = DueHeap()
    for key, due, drop in ops:
        for heap in (one, other):
            if drop:
                heap.discard(key)
            else:
                heap.push(key, due)
    expected: list[int] = []
    while len(expected) < limit and (top := other.peek()) is not None and top[0] <= now:
        expected.append(other.pop()[1])
    assert one.pop_due(now, limit) == expected
    assert len(one) == len(other)
    assert [one.pop() for _ in range(len(one))] == [other.pop() for _ in range(len(other))]
