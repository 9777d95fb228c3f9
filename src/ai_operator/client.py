"""A scripted /ws client: streams PCM like a microphone and records what the bot sends.

Used by the integration tests and the benchmarks, and handy for scripted calls. It speaks
the same protobuf + RTVI protocol as the web page and the official Pipecat clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets
from pipecat.frames.protobufs import frames_pb2

from ai_operator.audio import (
    AUDIBLE_RMS,
    FRAME_MS,
    INPUT_FRAME_BYTES,
    INPUT_SAMPLE_RATE,
    rms_int16,
)


def audio_message(pcm: bytes, sample_rate: int = INPUT_SAMPLE_RATE, channels: int = 1) -> bytes:
    """One protobuf audio frame, as a client sends it."""
    frame = frames_pb2.Frame()  # type: ignore[attr-defined]
    frame.audio.audio = pcm
    frame.audio.sample_rate = sample_rate
    frame.audio.num_channels = channels
    return bytes(frame.SerializeToString())


def rtvi_message(msg_type: str, data: Any = None, msg_id: str = "c1") -> bytes:
    """An RTVI client message wrapped in a protobuf MessageFrame."""
    payload = {"label": "rtvi-ai", "type": msg_type, "id": msg_id}
    if data is not None:
        payload["data"] = data
    frame = frames_pb2.Frame()  # type: ignore[attr-defined]
    frame.message.data = json.dumps(payload)
    return bytes(frame.SerializeToString())


CLIENT_READY = {"version": "2.2.0", "about": {"library": "ai-operator-client"}}


@dataclass
class Event:
    t: float  # time.monotonic() when received
    kind: str  # "audio", "interruption", or the RTVI message type
    data: Any


@dataclass
class Recording:
    """Everything the server sent, in order, with arrival times."""

    events: list[Event] = field(default_factory=list)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def first_audible_after(self, t: float) -> float | None:
        for e in self.events:
            if e.kind == "audio" and e.t >= t and rms_int16(e.data) >= AUDIBLE_RMS:
                return e.t
        return None

    def audio_bytes(self) -> bytes:
        return b"".join(e.data for e in self.events if e.kind == "audio")

    def texts(self, kind: str) -> list[str]:
        return [str(e.data.get("text", "")) for e in self.of(kind) if isinstance(e.data, dict)]


class VoiceClient:
    """Connect with `async with VoiceClient(url) as c:`; the receive loop runs meanwhile."""

    def __init__(
        self, url: str, *, origin: str | None = None, headers: dict[str, str] | None = None
    ):
        self.url = url
        self.origin = origin
        self.headers = headers or {}
        self.recording = Recording()
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str = ""

    async def __aenter__(self) -> VoiceClient:
        self._ws = await websockets.connect(
            self.url,
            origin=self.origin,  # type: ignore[arg-type]
            additional_headers=self.headers,
            max_size=None,
            open_timeout=10,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def send(self, data: bytes | str) -> None:
        await self._ws.send(data)

    async def ready(self) -> None:
        """Send RTVI client-ready (the bot greets after it) and wait for bot-ready."""
        await self.send(rtvi_message("client-ready", CLIENT_READY))
        await self.wait_for(lambda r: bool(r.of("bot-ready")), timeout=15)

    async def stream(self, pcm: bytes, *, realtime: bool = True) -> float:
        """Send 16 kHz mono PCM in 20 ms frames, paced like a microphone; returns end time."""
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(pcm), INPUT_FRAME_BYTES)):
            chunk = pcm[offset : offset + INPUT_FRAME_BYTES]
            if len(chunk) < INPUT_FRAME_BYTES:
                chunk = chunk + b"\0" * (INPUT_FRAME_BYTES - len(chunk))
            await self.send(audio_message(chunk))
            if realtime:
                delay = start + (i + 1) * FRAME_MS / 1000 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        return time.monotonic()

    async def silence(self, secs: float) -> None:
        await self.stream(b"\0" * int(secs * INPUT_SAMPLE_RATE) * 2)

    async def wait_for(
        self,
        predicate: Callable[[Recording], bool],
        *,
        timeout: float,  # noqa: ASYNC109 - a deadline per wait reads best in tests
    ) -> Recording:
        """Wait until `predicate(recording)` holds; raises TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while not predicate(self.recording):
                self._changed.clear()
                await self._changed.wait()
        return self.recording

    def _record(self, kind: str, data: Any) -> None:
        self.recording.events.append(Event(time.monotonic(), kind, data))
        self._changed.set()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                if isinstance(raw, str):
                    self._record("text", raw)
                    continue
                frame = frames_pb2.Frame.FromString(raw)  # type: ignore[attr-defined]
                which = frame.WhichOneof("frame")
                if which == "audio":
                    self._record("audio", frame.audio.audio)
                elif which == "message":
                    message = json.loads(frame.message.data)
                    self._record(str(message.get("type")), message.get("data"))
                elif which == "interruption":
                    self._record("interruption", None)
                else:
                    self._record(which or "unknown", None)
        except websockets.ConnectionClosed:
            pass
        finally:
            if self._ws is not None:
                self.close_code = self._ws.close_code
                self.close_reason = self._ws.close_reason or ""
            self.closed.set()
            self._changed.set()
