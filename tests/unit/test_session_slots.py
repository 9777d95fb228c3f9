"""SessionSlots: one --max-sessions count shared by forked worker processes."""

from __future__ import annotations

import multiprocessing

from ai_operator.workers import SessionSlots


def test_slots_refuse_beyond_the_limit_and_free_on_release():
    slots = SessionSlots()
    assert [slots.take(2), slots.take(2), slots.take(2)] == [True, True, False]
    assert slots.in_use == 2
    slots.release()
    assert slots.take(2) and slots.in_use == 2


def _take_one(slots: SessionSlots) -> None:
    assert slots.take(10)


def test_a_slot_taken_in_a_forked_worker_counts_in_every_process():
    slots = SessionSlots()
    child = multiprocessing.get_context("fork").Process(target=_take_one, args=(slots,))
    child.start()
    child.join(timeout=10)
    assert child.exitcode == 0
    assert slots.in_use == 1
