"""SessionSlots: one --max-sessions count shared by forked worker processes."""

from __future__ import annotations

import multiprocessing
import select

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


def _take_as_worker(slots: SessionSlots, index: int, count: int) -> None:
    slots.worker = index
    slots.serving()
    for _ in range(count):
        assert slots.take(10)


def test_each_worker_counts_its_own_sessions():
    slots = SessionSlots(workers=2)
    assert slots.per_worker == [-1, -1]  # neither serves yet
    child = multiprocessing.get_context("fork").Process(target=_take_as_worker, args=(slots, 1, 2))
    child.start()
    child.join(timeout=10)
    assert child.exitcode == 0
    assert slots.per_worker == [-1, 2] and slots.in_use == 2
    slots.serving()  # worker 0, idle
    assert slots.per_worker == [0, 2]
    slots.take(10)
    slots.take(10)
    assert slots.release() == 1  # what worker 0 still holds, not the other's two
    slots.worker = 1
    assert slots.release() == 1  # worker 1's two, one released
    assert slots.per_worker == [1, 1] and slots.in_use == 2


def test_only_the_least_busy_worker_should_accept():
    slots = SessionSlots(workers=2)
    slots.worker = 1
    slots.serving()
    assert slots.least_busy()  # the only worker serving, though it is worker 1
    slots.take(10)
    assert slots.least_busy()  # worker 0 is still loading: it does not count
    slots.worker = 0
    slots.serving()
    assert slots.least_busy()  # 0 calls against 1
    slots.worker = 1
    assert not slots.least_busy()
    slots.worker = 0
    slots.take(10)
    assert slots.least_busy()  # 1 against 1: both accept
    slots.worker = 1
    assert slots.least_busy()
    slots.release()
    assert slots.least_busy() and slots.per_worker == [1, 0]
    slots.worker = 0
    assert not slots.least_busy()


def test_taking_and_releasing_tell_this_process_at_once():
    slots = SessionSlots(workers=2)
    seen: list[list[int]] = []
    slots.on_change = lambda: seen.append(slots.per_worker)
    slots.take(10)
    slots.release()
    assert not slots.take(0)  # refused: nothing changed
    assert seen == [[1, -1], [0, -1]]


def test_a_change_in_one_worker_wakes_the_others():
    slots = SessionSlots(workers=2)
    assert slots.wakeup_fd is not None
    assert not select.select([slots.wakeup_fd], [], [], 0)[0]
    child = multiprocessing.get_context("fork").Process(target=_take_as_worker, args=(slots, 1, 1))
    child.start()
    child.join(timeout=10)
    assert child.exitcode == 0
    assert select.select([slots.wakeup_fd], [], [], 0)[0]  # worker 0 is told
    slots.drain_wakeups()
    assert not select.select([slots.wakeup_fd], [], [], 0)[0]
    slots.take(10)  # its own change wakes the other worker, not itself
    assert not select.select([slots.wakeup_fd], [], [], 0)[0]
    assert SessionSlots().wakeup_fd is None  # one process: nobody to tell
