"""Stand-ins for /ws that speak Pipecat's protobuf frames, for the web client's tests.

- `StepServer`: the test says what to send, step by step, on each socket the page opens,
  and when to close or drop it; every frame the page sends is recorded as Pipecat's own
  protobuf code reads it.
- Frame builders (`rtvi`, `audio`, `interruption`, `tone_chunks`) for what the real server
  sends, with the `id`, `name` and `pts` fields Pipecat's serializer sets.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

from ai_operator.audio import INPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES

CHUNK_SECS = 0.04
CHUNK_SAMPLES = int(CHUNK_SECS * INPUT_SAMPLE_RATE)


def frame(**kwargs: Any) -> bytes:
    from pipecat.frames.protobufs import frames_pb2

    message = frames_pb2.Frame(**kwargs)  # type: ignore[attr-defined]
    return bytes(message.SerializeToString())


def rtvi(msg_type: str, data: Any = None) -> bytes:
    from pipecat.frames.protobufs import frames_pb2

    message: dict[str, Any] = {"label": "rtvi-ai", "type": msg_type}
    if data is not None:
        message["data"] = data
    return frame(message=frames_pb2.MessageFrame(data=json.dumps(message)))  # type: ignore[attr-defined]


def audio(pcm: bytes, frame_id: int) -> bytes:
    from pipecat.frames.protobufs import frames_pb2

    # id, name and pts set as Pipecat's serializer sets them: the page must skip them.
    raw = frames_pb2.AudioRawFrame(  # type: ignore[attr-defined]
        id=frame_id,
        name=f"OutputAudioRawFrame#{frame_id}",
        audio=pcm,
        sample_rate=INPUT_SAMPLE_RATE,
        num_channels=1,
        pts=2**40 + frame_id,
    )
    return frame(audio=raw)


def interruption() -> bytes:
    return frame(interruption={"id": 99, "name": "InterruptionFrame#0"})


def tone_chunks(secs: float) -> list[bytes]:
    """A 440 Hz tone at -12 dBFS, 16 kHz int16, in 40 ms chunks."""
    n = int(secs * INPUT_SAMPLE_RATE)
    samples = [int(8000 * math.sin(2 * math.pi * 440 * i / INPUT_SAMPLE_RATE)) for i in range(n)]
    pcm = struct.pack(f"<{n}h", *samples)
    step = CHUNK_SAMPLES * SAMPLE_WIDTH_BYTES
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def tone(secs: float) -> list[bytes]:
    """`secs` of tone as audio frames, all at once (the page's jitter buffer holds them)."""
    return [audio(chunk, i + 1) for i, chunk in enumerate(tone_chunks(secs))]


def bot_output(text: str, segment_id: int, *, spoken: str = "", status: str = "new") -> bytes:
    """RTVI bot-output as Pipecat 1.14 sends it to a 2.x client (see rtvi/observer.py)."""
    remaining = text[len(spoken) :].strip()
    return rtvi(
        "bot-output",
        {
            "text": text,
            "spoken": False,
            "will_be_spoken": True,
            "aggregated_by": "sentence",
            "segment_id": segment_id,
            "spoken_status": status,
            "spoken_progress": {"accumulated_text": spoken, "remaining_text": remaining},
        },
    )


class PageSocket:
    """One socket the page opened: what it sent, and controls for the test's thread."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.opened_at = time.monotonic()
        self.dropped_at: float | None = None
        self.received: list[tuple[str, Any]] = []
        self.client_ready = threading.Event()
        self.closed = threading.Event()
        self.close_code: int | None = None
        self._audio = threading.Condition()
        self.audio_frames = 0

    def send(self, *frames: bytes) -> None:
        for data in frames:
            self.ws.send(data)

    def close(self, code: int, reason: str) -> None:
        self.ws.close(code, reason)

    def drop(self) -> None:
        """Cut the TCP connection with no close frame, as a network failure does."""
        self.dropped_at = time.monotonic()
        self.ws.socket.shutdown(socket.SHUT_RDWR)

    def wait_audio(self, frames: int, timeout: float) -> bool:
        with self._audio:
            return self._audio.wait_for(lambda: self.audio_frames >= frames, timeout)

    def record(self, raw: bytes | str) -> None:
        from pipecat.frames.protobufs import frames_pb2

        if isinstance(raw, str):
            self.received.append(("text", raw))
            return
        parsed = frames_pb2.Frame.FromString(raw)  # type: ignore[attr-defined]
        which = parsed.WhichOneof("frame")
        if which == "audio":
            a = parsed.audio
            self.received.append(("audio", (len(a.audio), a.sample_rate, a.num_channels)))
            with self._audio:
                self.audio_frames += 1
                self._audio.notify_all()
        elif which == "message":
            message = json.loads(parsed.message.data)
            self.received.append(("message", message))
            if message.get("type") == "client-ready":
                self.client_ready.set()
        else:
            self.received.append((str(which), None))


class StepServer:
    """A /ws stand-in the test drives: each socket the page opens is handed to the test."""

    def __init__(self) -> None:
        self.sockets: list[PageSocket] = []
        self.errors: list[BaseException] = []
        self._opened = threading.Condition()

    def handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        sock = PageSocket(ws)
        with self._opened:
            self.sockets.append(sock)
            self._opened.notify_all()
        try:
            while True:
                sock.record(ws.recv())
        except ConnectionClosed as exc:
            sock.close_code = exc.rcvd.code if exc.rcvd else None
        except OSError:
            pass  # dropped by the test
        except BaseException as exc:  # reported by the test, which cannot see this thread
            self.errors.append(exc)
            raise
        finally:
            sock.closed.set()

    def socket(self, n: int, timeout: float) -> PageSocket:
        """The n-th socket (1-based) once the page has opened it and sent client-ready."""
        with self._opened:
            if not self._opened.wait_for(lambda: len(self.sockets) >= n, timeout):
                raise AssertionError(f"the page opened {len(self.sockets)} sockets, not {n}")
            sock = self.sockets[n - 1]
        if not sock.client_ready.wait(timeout):
            raise AssertionError(f"socket {n} never sent client-ready: {sock.received[:3]}")
        return sock


@contextlib.contextmanager
def step_server() -> Iterator[tuple[StepServer, str]]:
    """A StepServer on a free port; yields it and its ws:// URL."""
    from websockets.sync.server import serve

    script = StepServer()
    server = serve(script.handler, "127.0.0.1", 0, max_size=None)
    thread = threading.Thread(target=server.serve_forever, name="step-ws", daemon=True)
    thread.start()
    port = server.socket.getsockname()[1]
    try:
        yield script, f"ws://127.0.0.1:{port}/ws"
    finally:
        for sock in script.sockets:
            with contextlib.suppress(Exception):
                sock.ws.close()
        server.shutdown()
        thread.join(timeout=10)
