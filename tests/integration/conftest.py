"""Helpers for the reliability, security and fuzz tests: servers with special settings,
/healthz polling, and a raw WebSocket client that can misbehave in ways `websockets` won't."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import httpx
from tests.conftest import ServerProcess, running_server  # noqa: F401  (re-exported)

# A greeting long enough (~20 s of speech) to fill the send buffers of a client that never reads.
LONG_GREETING = " ".join(
    [
        "Hello and welcome to the AI Operator.",
        "I can answer questions about almost anything you like,",
        "from the weather and the news to history, science and the arts.",
        "Take your time, speak naturally, and interrupt me whenever you want to.",
    ]
    * 2
)


def healthz(server: ServerProcess) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/healthz", timeout=10).json()  # type: ignore[no-any-return]


async def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,  # noqa: ASYNC109 - a deadline per wait reads best in tests
    interval: float = 0.1,
) -> None:
    """Poll `predicate` until it holds; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def wait_idle(
    server: ServerProcess,
    *,
    timeout: float = 30,  # noqa: ASYNC109 - a deadline per wait reads best in tests
) -> dict[str, Any]:
    """Wait until the server has no session; returns the last /healthz body."""
    body: dict[str, Any] = {}

    def idle() -> bool:
        nonlocal body
        body = healthz(server)
        return body["sessions"] == 0

    await wait_until(idle, timeout=timeout, interval=0.2)
    return body


def masked_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One client->server WebSocket frame (clients must mask)."""
    header = bytes([0x80 | opcode])
    length = len(payload)
    if length < 126:
        header += bytes([0x80 | length])
    elif length < 1 << 16:
        header += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + body


class RawWebSocket:
    """A hand-rolled client: it can refuse to read, or vanish without a close frame."""

    def __init__(self, port: int, *, recv_buffer: int | None = None, path: str = "/ws") -> None:
        self.sock = socket.socket()
        if recv_buffer is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("server closed during the handshake")
            response += chunk
        self.status = int(response.split(b" ", 2)[1])

    def send(self, payload: bytes) -> None:
        self.sock.sendall(masked_frame(payload))

    def drain_until_closed(self, max_bytes: int = 64 << 20) -> str:
        """Read what the server sent until it goes away: 'reset', 'closed' or 'open'."""
        total = 0
        try:
            while total < max_bytes:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "closed"
                total += len(chunk)
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            pass
        return "open"

    def abort(self) -> None:
        """Vanish: RST instead of a close handshake."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()
