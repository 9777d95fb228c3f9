"""Local stand-ins for the seed system's cloud providers, speaking their real wire protocols.

Each fake is a small aiohttp server on 127.0.0.1 (a free port), run on its own event loop in a
background thread so blocking model calls and the test's own loop never hold each other up.
The server under test reaches a fake through the same base-URL settings a user would change
(`--deepgram-base-url`, `--openai-base-url`, `--cartesia-base-url`), so no product code is
patched. Speech is real: the Deepgram fake transcribes with the local Whisper model and the
Cartesia fake speaks with the local Piper voice.

Faults can be switched at any time (tests flip them between turns):

    fake.fault = Fault.SERVER_ERROR     # every new request / connection gets HTTP 500
    fake.set_fault(Fault.REFUSE)        # stop listening: connections are refused
    fake.latency_secs = 0.5             # wait this long before each answer
    fake.api_key = "rotated"            # the server's key no longer matches: HTTP 401
"""

from __future__ import annotations

import asyncio
import enum
import threading
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")

HOST = "127.0.0.1"
# How long the fake waits for its own loop to start or stop.
THREAD_TIMEOUT_SECS = 30.0
# How often a stalled request checks whether its client has gone.
STALL_POLL_SECS = 0.2


class Fault(enum.StrEnum):
    """What a fake does to the next request or connection."""

    NONE = "none"
    REFUSE = "refuse"  # not listening: the connection is refused
    UNAUTHORIZED = "401"
    RATE_LIMITED = "429"
    SERVER_ERROR = "500"
    STALL = "stall"  # accept, then never answer
    GARBAGE = "garbage"  # answer with something that is not the protocol


HTTP_FAULTS = {Fault.UNAUTHORIZED: 401, Fault.RATE_LIMITED: 429, Fault.SERVER_ERROR: 500}


@dataclass
class Request:
    """One request or connection the fake saw, for assertions."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    outcome: str = "accepted"  # or the HTTP status it was refused with, or the fault
    messages: list[Any] = field(default_factory=list)  # JSON messages / bodies received


class FakeServer:
    """Base class: an aiohttp app on a free port, served from a background thread."""

    name = "fake"
    # The event loop it serves on; the benchmarks' fakes use uvloop's, which costs the
    # shared cores less per message (bench.cloud_fakes).
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = staticmethod(asyncio.new_event_loop)

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.fault = Fault.NONE
        self.latency_secs = 0.0
        self.requests: list[Request] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._changed = threading.Condition()
        self._stop: asyncio.Event | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    def load(self) -> None:
        """Load models before serving (runs in the fake's thread); override as needed."""

    def start(self) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = self.loop_factory()
            self._loop = loop
            try:
                self.load()
                loop.run_until_complete(self._open())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_until_complete(self._serve_until_stopped())
            loop.close()

        self._thread = threading.Thread(target=serve, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(THREAD_TIMEOUT_SECS):
            raise TimeoutError(f"{self.name} did not start")
        if failure:
            raise failure[0]
        return self

    async def _open(self) -> None:
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        self._stop = asyncio.Event()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, HOST, self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server  # the bound socket tells the free port chosen
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _serve_until_stopped(self) -> None:
        assert self._stop is not None and self._runner is not None
        await self._stop.wait()
        await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(THREAD_TIMEOUT_SECS)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control from the test ------------------------------------------------------------

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the fake's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(THREAD_TIMEOUT_SECS)

    def set_fault(self, fault: Fault) -> None:
        """Switch fault mode; REFUSE closes the listening socket, leaving it reopens it."""
        previous, self.fault = self.fault, fault
        if fault is Fault.REFUSE and previous is not Fault.REFUSE:
            self.call(self._close_listener())
        elif previous is Fault.REFUSE and fault is not Fault.REFUSE:
            self.call(self._listen())

    async def _close_listener(self) -> None:
        if self._site is not None:
            # Closes the listening socket only: connections already open stay as they are.
            await self._site.stop()
            self._site = None

    def reset(self) -> None:
        """Back to a healthy server with no history (between tests)."""
        self.set_fault(Fault.NONE)
        self.latency_secs = 0.0
        with self._changed:
            self.requests.clear()
            self.forget()

    def forget(self) -> None:
        """Clear what a subclass recorded (called by `reset`)."""

    def record(self, request: Request) -> Request:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()
        return request

    def touch(self) -> None:
        """Wake anyone waiting in `wait_until` (call after changing recorded state)."""
        with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:  # noqa: ASYNC109
        """Wait (without blocking the caller's loop) until `predicate()` holds."""

        def wait() -> bool:
            with self._changed:
                return self._changed.wait_for(predicate, timeout)

        if not await asyncio.to_thread(wait):
            raise TimeoutError(f"{self.name}: condition not met within {timeout} s")

    # --- helpers for subclasses -----------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def new_request(self, request: web.Request) -> Request:
        return self.record(
            Request(path=request.path, query=dict(request.query), headers=dict(request.headers))
        )

    async def delay(self) -> None:
        if self.latency_secs > 0:
            await asyncio.sleep(self.latency_secs)

    @staticmethod
    async def stall(request: web.Request) -> None:
        """Hold an HTTP request open without answering until the client goes away."""
        # aiohttp has no event for a client going away mid-request, so look now and then.
        while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(STALL_POLL_SECS)


def request_id() -> str:
    return str(uuid.uuid4())
