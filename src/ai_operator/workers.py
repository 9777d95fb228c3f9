"""Several server processes on one port, so a many-core machine uses all its cores.

One Python process runs one event loop, and in the capacity benchmark that loop is what
fills: one process holds about 15 calls per core however many cores the machine has. With
`--workers N` the parent binds the port, forks N workers before loading anything, and
each worker loads its own models and serves connections from the shared listening socket
(the kernel hands each new connection to whichever worker accepts it first).

What the workers must agree on is shared through memory made before the fork:
`SessionSlots` (the `--max-sessions` limit counts every worker's calls) and, through
prometheus_client's multiprocess mode, /metrics (any worker answers with the sum of all).
The conversation history is one SQLite file that every worker writes to.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

# prometheus_client reads this when it is first imported: its values then live in files
# that every process writes and /metrics sums.
PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class SessionSlots:
    """How many conversations are open, across every worker process."""

    def __init__(self) -> None:
        self._count: Any = multiprocessing.Value("i", 0)

    @property
    def in_use(self) -> int:
        return int(self._count.value)

    def take(self, limit: int) -> bool:
        """Count one more conversation, unless `limit` are already open."""
        with self._count.get_lock():
            if self._count.value >= limit:
                return False
            self._count.value += 1
            return True

    def release(self) -> None:
        with self._count.get_lock():
            self._count.value -= 1


def bind(host: str, port: int) -> socket.socket:
    """The listening socket the workers share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def use_shared_metrics() -> str:
    """Switch prometheus_client to multiprocess mode; call before it is imported."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the workers were set up")
    path = tempfile.mkdtemp(prefix="ai-operator-metrics-")
    os.environ[PROMETHEUS_DIR_ENV] = path
    return path


def run_workers(count: int, sock: socket.socket, work: Callable[[int], None]) -> int:
    """Fork `count` processes running `work(index)`; wait for them; the exit status.

    Ctrl-C reaches every process of the terminal's group, so the parent only waits while
    the workers shut down; SIGTERM to the parent is passed on to them. A worker that dies
    takes the server down with it (status 1): a supervisor above should restart the whole.
    """
    pids: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            status = 0
            try:
                work(index)
            except BaseException:  # noqa: BLE001 - a worker must not return into the parent's loop
                logger.exception("worker %d failed", index)
                status = 1
            finally:
                os._exit(status)
        pids[pid] = index
    sock.close()  # the workers hold it open

    def stop_workers(_signum: int, _frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop_workers)
    status = 0
    while pids:
        pid, wait_status = os.wait()
        if pid not in pids:
            continue
        index = pids.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if code not in (0, -signal.SIGTERM, -signal.SIGINT) and status == 0:
            logger.error("worker %d exited with %s: stopping the others", index, code)
            status = 1
            stop_workers(signal.SIGTERM, None)
    metrics_dir = os.environ.get(PROMETHEUS_DIR_ENV)
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return status
