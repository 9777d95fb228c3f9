"""The /ws wire protocol: Pipecat's protobuf frames plus RTVI JSON messages, hardened.

Clients (our page, or the official Pipecat SDKs) send binary protobuf `Frame` messages:
audio as `AudioRawFrame` (16-bit PCM) and RTVI messages as `MessageFrame` JSON. Pipecat's
own serializer trusts its input; `GuardedProtobufSerializer` checks every message first and
turns anything wrong into a clear RTVI `error` message for the client and one log line,
instead of an exception that would end the receive loop. See docs/protocol.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import soxr
from google.protobuf.message import DecodeError
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.frames.protobufs import frames_pb2
from pipecat.serializers.protobuf import ProtobufFrameSerializer

from ai_operator.audio import ACCEPTED_INPUT_RATES, INPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES

logger = logging.getLogger(__name__)

RTVI_LABEL = "rtvi-ai"
# The same kind of complaint is sent to the client at most this often, so a flood of bad
# messages cannot be turned into a flood of replies.
ERROR_REPORT_INTERVAL_SECS = 1.0
MAX_AUDIO_CHANNELS = 2


def rtvi_error(message: str, *, fatal: bool = False) -> dict[str, Any]:
    """An RTVI `error` message, as official Pipecat clients expect it."""
    return {"label": RTVI_LABEL, "type": "error", "data": {"error": message, "fatal": fatal}}


def rtvi_server_message(data: dict[str, Any]) -> dict[str, Any]:
    """An RTVI `server-message`: our own notices (provider failover, session info)."""
    return {"label": RTVI_LABEL, "type": "server-message", "data": data}


class InputRejected(Exception):
    """A client message broke the protocol; `kind` groups repeats for rate limiting."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def to_mono_16k(pcm: bytes, sample_rate: int, channels: int) -> bytes:
    """Down-mix to mono and resample to the pipeline rate; raises InputRejected on bad shapes."""
    if not pcm:
        raise InputRejected("empty-audio", "audio frame carries no samples")
    if sample_rate not in ACCEPTED_INPUT_RATES:
        rates = ", ".join(str(r) for r in sorted(ACCEPTED_INPUT_RATES))
        raise InputRejected(
            "sample-rate", f"unsupported sample rate {sample_rate} Hz (accepted: {rates})"
        )
    if channels < 1 or channels > MAX_AUDIO_CHANNELS:
        raise InputRejected("channels", f"unsupported channel count {channels} (send 1 or 2)")
    frame_bytes = SAMPLE_WIDTH_BYTES * channels
    if len(pcm) % frame_bytes:
        raise InputRejected(
            "odd-length",
            f"audio is {len(pcm)} bytes, not a whole number of {channels}-channel 16-bit samples",
        )
    if channels == 1 and sample_rate == INPUT_SAMPLE_RATE:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
    mono = samples.mean(axis=1) if channels > 1 else samples[:, 0]
    if sample_rate != INPUT_SAMPLE_RATE:
        mono = soxr.resample(mono.astype(np.float32), sample_rate, INPUT_SAMPLE_RATE)
    return np.clip(np.rint(mono), -32768, 32767).astype("<i2").tobytes()


class GuardedProtobufSerializer(ProtobufFrameSerializer):
    """Pipecat's protobuf serializer with input validation and error reporting.

    `on_reject(kind, message)` is called (rate limited per kind) for every rejected
    message; the session turns it into an RTVI error for the client.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int,
        on_reject: Callable[[str, str], Awaitable[None]],
        session_id: str = "-",
    ) -> None:
        super().__init__()
        self._max_bytes = max_message_bytes
        self._on_reject = on_reject
        self._session_id = session_id
        self._last_report: dict[str, float] = {}
        self.rejected = 0

    def check(self, data: str | bytes) -> Frame | None:
        """Validate one client message; return the frame, or raise InputRejected."""
        if isinstance(data, str):
            raise InputRejected(
                "text-message", "expected binary protobuf frames, got a text WebSocket message"
            )
        if len(data) > self._max_bytes:
            raise InputRejected(
                "oversized", f"message of {len(data)} bytes exceeds the {self._max_bytes} byte limit"
            )
        try:
            proto = frames_pb2.Frame.FromString(data)  # type: ignore[attr-defined]
        except DecodeError as exc:
            raise InputRejected("malformed", f"not a Pipecat protobuf frame ({exc})") from exc
        which = proto.WhichOneof("frame")
        if which == "audio":
            audio = proto.audio
            pcm = to_mono_16k(audio.audio, audio.sample_rate, audio.num_channels or 1)
            return InputAudioRawFrame(audio=pcm, sample_rate=INPUT_SAMPLE_RATE, num_channels=1)
        if which == "message":
            try:
                message = json.loads(proto.message.data)
            except ValueError as exc:
                raise InputRejected("bad-json", f"message frame is not valid JSON ({exc})") from exc
            if not isinstance(message, dict):
                raise InputRejected("bad-json", "message frame must hold a JSON object")
            return None  # parsed again by the parent, which builds the transport frame
        if which in ("text", "transcription", "interruption"):
            raise InputRejected("unsupported-frame", f"clients may not send '{which}' frames")
        raise InputRejected("unknown-frame", "frame has no known kind (expected audio or message)")

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            frame = self.check(data)
        except InputRejected as exc:
            await self._reject(exc)
            return None
        if frame is not None:
            return frame
        return await super().deserialize(data)

    async def _reject(self, exc: InputRejected) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_report.get(exc.kind, -1e9) < ERROR_REPORT_INTERVAL_SECS:
            return
        self._last_report[exc.kind] = now
        logger.warning("[%s] rejected client message: %s", self._session_id, exc)
        await self._on_reject(exc.kind, str(exc))
