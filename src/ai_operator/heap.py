"""The garbage collector's full passes, kept off the calls' critical path.

CPython's cyclic collector stops the whole process for a full (generation 2) pass, and
every call on the worker waits it out. Two things made those passes long and frequent:

- **The heap is mostly what lives as long as the process**: imported modules, Pipecat's and
  pydantic's classes and schemas, about 160,000 tracked objects before the first call. A
  full pass over them takes 80-100 ms on the 2-vCPU benchmark VM. `settle()` freezes them
  once the worker is loaded (`gc.freeze()`), so passes walk only what came after: 25-115
  ms with 10 calls on a worker instead of 80-215 ms (logged in the capacity benchmark).
  No collection comes first, as Python's documentation advises before a fork: it would
  cost ~0.1 s of the start for the little garbage the imports leave (kept, once).
- **A full pass forced at the end of every call** (Pipecat's `force_gc`, to free a
  finished call's cycles at once): with many calls on a worker one ends every few seconds,
  and each end stalled all the others. `collect_if_idle()` forces it only when the worker
  holds no call; otherwise a finished call's cycles go in the collector's own next pass.
"""

from __future__ import annotations

import asyncio
import gc
import logging

logger = logging.getLogger(__name__)


def settle() -> None:
    """Freeze what exists now. Called once per worker, after its models and modules are
    loaded and before it serves."""
    gc.freeze()
    logger.debug("heap settled: %d objects frozen", gc.get_freeze_count())


async def collect_if_idle(open_calls: int) -> bool:
    """After a call ends: a full pass (in a thread, as Pipecat's) if the worker holds no
    call now, to give a finished call's memory back at once. Whether it ran."""
    if open_calls > 0:
        return False
    collected = await asyncio.to_thread(gc.collect)
    logger.debug("idle worker: the collector freed %d objects", collected)
    return True
