"""Several server processes on one port, so a many-core machine uses all its cores.

One Python process runs one event loop, and in the capacity benchmark that loop is what
fills: one process holds about 15 calls per core however many cores the machine has. With
`--workers N` the parent binds the port, forks N workers before loading anything, and
each worker loads its own models and serves connections from the shared listening socket.
Left to the kernel, a new connection goes to whichever worker accepts it first, and the
busiest one, whose event loop polls most often, won most: in the capacity benchmark one of
two workers held 22 of 30 calls while the other idled. So a worker listens only while it
holds no more calls than the least busy one (`BalancedServer`).

What the workers must agree on is shared through memory made before the fork:
`SessionSlots` (the `--max-sessions` limit counts every worker's calls) and, through
prometheus_client's multiprocess mode, /metrics (any worker answers with the sum of all).
The conversation history is one SQLite file that every worker writes to.
"""

from __future__ import annotations

import asyncio
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

import uvicorn

logger = logging.getLogger(__name__)

# prometheus_client reads this when it is first imported: its values then live in files
# that every process writes and /metrics sums.
PROMETHEUS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker compares its calls with the others' besides when told of a change
# (a safety net: it is told at once, through SessionSlots' pipes).
BALANCE_POLL_SECS = 1.0
NOT_SERVING = -1


class SessionSlots:
    """How many conversations are open, in all and per worker process.

    Made before the fork; each worker then sets `worker` to its index. A worker counts as
    serving once it calls `serving()`, so one still loading its models is not taken for
    the least busy.
    """

    def __init__(self, workers: int = 1) -> None:
        self._count: Any = multiprocessing.Value("i", 0)
        # Guarded by the count's lock.
        self._loads: Any = multiprocessing.Array("i", [NOT_SERVING] * workers, lock=False)
        self.worker = 0
        # Called in this process after it takes or releases a slot (BalancedServer).
        self.on_change: Callable[[], None] | None = None
        # A pipe per worker, written by the others when their count changes.
        self._pipes = [os.pipe() for _ in range(workers)] if workers > 1 else []
        for read_end, write_end in self._pipes:
            os.set_blocking(read_end, False)
            os.set_blocking(write_end, False)

    @property
    def in_use(self) -> int:
        return int(self._count.value)

    @property
    def per_worker(self) -> list[int]:
        """Open conversations of each worker; -1 for one not serving yet."""
        with self._count.get_lock():
            return list(self._loads)

    def serving(self) -> None:
        with self._count.get_lock():
            self._loads[self.worker] = max(self._loads[self.worker], 0)

    def take(self, limit: int) -> bool:
        """Count one more conversation, unless `limit` are already open."""
        with self._count.get_lock():
            if self._count.value >= limit:
                return False
            self._count.value += 1
            self._loads[self.worker] = max(self._loads[self.worker], 0) + 1
        self._changed()
        return True

    def release(self) -> int:
        """Count one conversation fewer; the conversations this worker still holds."""
        with self._count.get_lock():
            self._count.value -= 1
            self._loads[self.worker] -= 1
            left = max(int(self._loads[self.worker]), 0)
        self._changed()
        return left

    def least_busy(self) -> bool:
        """Whether this worker holds no more conversations than any other serving one."""
        loads = self.per_worker
        serving = [n for n in loads if n != NOT_SERVING]
        return not serving or max(loads[self.worker], 0) <= min(serving)

    @property
    def wakeup_fd(self) -> int | None:
        """Readable when another worker's count changed (None with one worker); drain it
        with `drain_wakeups`."""
        return self._pipes[self.worker][0] if self._pipes else None

    def drain_wakeups(self) -> None:
        fd = self.wakeup_fd
        with contextlib.suppress(BlockingIOError):
            while fd is not None and os.read(fd, 512):
                pass

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
        for index, (_, write_end) in enumerate(self._pipes):
            if index != self.worker:
                with contextlib.suppress(BlockingIOError):  # full: a wakeup is pending anyway
                    os.write(write_end, b"!")


class BalancedServer(uvicorn.Server):
    """uvicorn's server for one of several workers sharing a listening socket (`fd`): it
    accepts connections only while this worker holds no more conversations than the least
    busy worker.

    Stopping is closing this worker's own copy of the socket (new connections wait in the
    kernel's backlog for a worker that accepts; open ones are not touched); starting again
    listens on a fresh copy. A worker re-checks when it takes or releases a call and when
    another one tells it of a change (and every `poll_secs`), so a least busy worker is
    always listening.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        fd: int,
        slots: SessionSlots,
        poll_secs: float = BALANCE_POLL_SECS,
    ) -> None:
        super().__init__(config)
        self._fd = fd
        self._slots = slots
        self._poll_secs = poll_secs
        self._balancer: asyncio.Task[None] | None = None
        self._resuming: asyncio.Task[None] | None = None  # listening again, under way

    def _listening_socket(self) -> socket.socket:
        # The family is read from the descriptor: a TCP socket gets uvloop's TCP transport
        # (TCP_NODELAY on), where socket.fromfd(fd, AF_UNIX, ...) made it a pipe.
        return socket.socket(fileno=os.dup(self._fd))

    def _protocol(self) -> asyncio.Protocol:  # what uvicorn's startup() builds per connection
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[self._listening_socket()])
        self._slots.serving()
        self._slots.on_change = self._rebalance
        wakeup = self._slots.wakeup_fd
        if wakeup is not None:
            asyncio.get_running_loop().add_reader(wakeup, self._woken)
        self._balancer = asyncio.create_task(self._balance(), name="balance-workers")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._slots.on_change = None
        if self._slots.wakeup_fd is not None:
            asyncio.get_running_loop().remove_reader(self._slots.wakeup_fd)
        if self._balancer is not None:
            self._balancer.cancel()
        await super().shutdown(sockets)

    async def _balance(self) -> None:
        while not self.should_exit:
            self._rebalance()
            await asyncio.sleep(self._poll_secs)

    def _woken(self) -> None:
        self._slots.drain_wakeups()
        self._rebalance()

    def _rebalance(self) -> None:
        if self.should_exit:
            return
        if not self._slots.least_busy():
            for server in self.servers:
                server.close()
            self.servers = []
        elif not self.servers and self._resuming is None:
            # Kept: the loop holds only a weak reference to a task.
            self._resuming = asyncio.get_running_loop().create_task(
                self._listen(), name="listen-again"
            )

    async def _listen(self) -> None:
        try:
            server = await asyncio.get_running_loop().create_server(
                self._protocol, sock=self._listening_socket(), backlog=self.config.backlog
            )
        finally:
            self._resuming = None
        if self.should_exit:
            server.close()
            return
        self.servers.append(server)
        self._rebalance()  # busier again meanwhile: stop at once


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
