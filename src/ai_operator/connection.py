"""The accepted WebSocket as a session's transport sees it: bounded, metered, closed once.

Pipecat's FastAPI transport reads and writes the socket directly and trusts the client to
keep up. `GuardedWebSocket` stands in for Starlette's WebSocket and adds what a public
server needs:

- every send (and the close handshake) waits at most `send_timeout_secs`; a client that
  stops reading has its TCP connection dropped instead of pinning the session forever;
- every received message is metered by an `InputRateLimiter`; beyond the limit the client
  gets an RTVI error, then a close with code 1008 and the reason;
- whoever ends the session first (rate limit, idle timeout, slow reader) decides the close
  code and reason the client sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ai_operator.security import (
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    InputRateLimiter,
    close_reason,
)

# Where `TransportControlMiddleware` leaves the connection's abort() in the ASGI scope.
ABORT_SCOPE_KEY = "ai_operator.abort"
# Kernel send buffer per WebSocket (Linux doubles it): a few seconds of our audio, plenty
# for any live client, and a bound on what a client that stopped reading makes us hold.
SOCKET_SEND_BUFFER_BYTES = 64 * 1024

# SO_LINGER on, 0 s: closing sends a reset instead of waiting to deliver the buffer.
LINGER_RESET = struct.pack("ii", 1, 0)

_SEND_FAILURES = (OSError, RuntimeError, WebSocketDisconnect)


class TransportControlMiddleware:
    """ASGI middleware giving each WebSocket a way to drop its TCP connection.

    A client that stops reading fills its TCP window; from then on every send, the close
    handshake included, waits forever, and ASGI has no call to abort a connection. Under
    uvicorn the `send` callable is a method of the connection's protocol object, so this
    middleware (outermost for WebSockets) puts that transport's `abort` into the scope and
    caps the socket's kernel send buffer. Under another server it does nothing, and a
    stalled session is still ended, only its socket lingers until the OS gives up.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            transport: Any = getattr(getattr(send, "__self__", None), "transport", None)
            if callable(getattr(transport, "abort", None)):  # asyncio's or uvloop's
                sock = transport.get_extra_info("socket")
                _set_socket_option(sock, socket.SO_SNDBUF, SOCKET_SEND_BUFFER_BYTES)
                scope = {**scope, ABORT_SCOPE_KEY: functools.partial(_reset, transport)}
        await self.app(scope, receive, send)


def _set_socket_option(sock: Any, option: int, value: int | bytes) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, value)


def _reset(transport: Any) -> None:
    """Drop the connection with a TCP reset, discarding what the client never read."""
    _set_socket_option(transport.get_extra_info("socket"), socket.SO_LINGER, LINGER_RESET)
    transport.abort()


class GuardedWebSocket:
    """A Starlette WebSocket with bounded sends, metered receives and a decided close.

    `on_end(reason)` is called once when the guard ends the session itself (rate limit,
    slow reader, `end()`); the session cancels its pipeline there. `encode(message)` turns
    an RTVI message into the bytes sent as the last words before a close.
    """

    def __init__(
        self,
        websocket: WebSocket,
        *,
        limiter: InputRateLimiter,
        send_timeout_secs: float,
        encode: Callable[[dict[str, Any]], bytes] | None,
        notice: Callable[[str], dict[str, Any]],
        on_end: Callable[[str], None],
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._ws = websocket
        self._limiter = limiter
        self._send_timeout = send_timeout_secs
        self._encode = encode
        self._notice = notice
        self._on_end = on_end
        self._log = log
        self._send_lock = asyncio.Lock()
        self._abort: Callable[[], None] | None = websocket.scope.get(ABORT_SCOPE_KEY)
        self._ended = False
        self._dropped = False
        self.close_code = CLOSE_NORMAL
        self.close_reason = ""
        self.peer_close: tuple[int, str] | None = None  # how the client (or its server) closed
        self.received_messages = 0
        self.received_bytes = 0

    # --- what Pipecat's FastAPIWebsocketTransport reads ------------------------------------

    @property
    def headers(self) -> Any:
        return self._ws.headers

    @property
    def client_state(self) -> WebSocketState:
        return self._ws.client_state

    @property
    def application_state(self) -> WebSocketState:
        return self._ws.application_state

    @property
    def ended(self) -> bool:
        return self._ended

    async def receive(self) -> Message:
        """The next client message; a disconnect once the session has been ended."""
        if self._ended:
            return {"type": "websocket.disconnect", "code": self.close_code}
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            self.peer_close = (message.get("code", 1005), message.get("reason") or "")
        if message["type"] != "websocket.receive":
            return message
        size = len(message.get("bytes") or b"") + len(message.get("text") or "")
        self.received_messages += 1
        self.received_bytes += size
        exceeded = self._limiter.admit(size)
        if exceeded is None:
            return message
        await self.end(CLOSE_POLICY_VIOLATION, f"rate limit exceeded: {exceeded}")
        return {"type": "websocket.disconnect", "code": self.close_code}

    async def send_bytes(self, data: bytes) -> None:
        await self._bounded_send({"type": "websocket.send", "bytes": data})

    async def send_text(self, data: str) -> None:
        await self._bounded_send({"type": "websocket.send", "text": data})

    async def close(self, code: int = CLOSE_NORMAL, reason: str | None = None) -> None:
        """Close with the code decided by `end()` if any, else `code`; bounded in time."""
        if not self._ended:
            self._decide(code, reason or "")
        if (
            self._dropped
            or self._ws.client_state is not WebSocketState.CONNECTED
            or self._ws.application_state is not WebSocketState.CONNECTED
        ):
            return  # gone already, or closed by us
        try:
            async with asyncio.timeout(self._send_timeout):
                async with self._send_lock:
                    if self._ws.application_state is WebSocketState.CONNECTED:
                        await self._ws.close(self.close_code, close_reason(self.close_reason))
        except TimeoutError:
            self._drop("the close handshake timed out")
        except _SEND_FAILURES:
            pass  # the client is already gone

    # --- ending a session --------------------------------------------------------------

    async def end(self, code: int, reason: str) -> None:
        """End the session: tell the client why (RTVI error), then close with `code`."""
        if self._ended:
            return
        self._decide(code, reason)
        self._ended = True
        self._log.warning("ending session: %s (close %d)", reason, code)
        if self._encode is not None:  # None: the peer (a phone call) has no way to show it
            with contextlib.suppress(ConnectionAbortedError, *_SEND_FAILURES):
                await self.send_bytes(self._encode(self._notice(reason)))
        self._on_end(reason)

    def outcome(self) -> str:
        """How the connection ended, for the session's last log line."""
        if self.peer_close is not None and not self._ended:
            code, reason = self.peer_close
            return f"disconnected ({code} {reason})".replace(" )", ")")
        return f"closed by us ({self.close_code} {self.close_reason})".replace(" )", ")")

    def _decide(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason

    def _drop(self, why: str) -> None:
        """Abort the TCP connection: nothing more can be sent to this client."""
        if self._dropped:
            return
        self._dropped = True
        self._log.warning("dropping the connection: %s", why)
        if self._abort is not None:
            self._abort()

    async def _bounded_send(self, message: Message) -> None:
        if self._dropped:
            raise ConnectionAbortedError("connection dropped")
        try:
            async with asyncio.timeout(self._send_timeout):
                async with self._send_lock:
                    await self._ws.send(message)
        except TimeoutError:
            reason = f"client has not read for {self._send_timeout:.0f} s"
            if not self._ended:
                self._decide(CLOSE_POLICY_VIOLATION, reason)
                self._ended = True
                self._on_end(reason)
            self._drop(reason)
            raise ConnectionAbortedError(reason) from None
