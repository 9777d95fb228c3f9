"""heap: the startup objects leave the collector's sight; a full pass is forced only on an
idle worker, and later garbage is still found."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ai_operator import heap


@pytest.fixture
def unfrozen_afterwards() -> Iterator[None]:
    yield
    gc.unfreeze()


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    """A reference cycle nothing else holds: only a collector pass frees it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_settle_freezes_what_exists_and_leaves_later_garbage_to_the_collector(
    unfrozen_afterwards,
):
    before = cycle()  # garbage already, frozen with the rest: never walked again
    heap.settle()
    assert gc.get_freeze_count() > 1000  # the interpreter's and the imports' objects
    after = cycle()
    gc.collect()
    assert after() is None
    assert before() is not None


async def test_a_full_pass_is_forced_only_when_the_worker_holds_no_call():
    gc.disable()  # only the forced pass may free the cycle
    try:
        ref = cycle()
        assert not await heap.collect_if_idle(open_calls=3)
        assert ref() is not None  # the other calls are not stalled for it
        assert await heap.collect_if_idle(open_calls=0)
        assert ref() is None
    finally:
        gc.enable()
