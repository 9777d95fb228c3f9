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
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
)
from pipecat.frames.protobufs import frames_pb2
from pipecat.serializers.protobuf import ProtobufFrameSerializer

from ai_operator.audio import ACCEPTED_INPUT_RATES, INPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES
from ai_operator.audio_batch import IdleAudioGate, through_gate

logger = logging.getLogger(__name__)

RTVI_LABEL = "rtvi-ai"
# The same kind of complaint is sent to the client at most this often, so a flood of bad
# messages cannot be turned into a flood of replies.
ERROR_REPORT_INTERVAL_SECS = 1.0
MAX_AUDIO_CHANNELS = 2
# RTVI messages a client may send. Others are refused here: `raw-audio*` would bypass the
# audio checks above, `send-file` would have the server fetch a client-chosen URL, and the
# rest have no use in a voice conversation. See docs/protocol.md.
CLIENT_MESSAGE_TYPES = frozenset(
    {"client-ready", "client-message", "send-text", "disconnect-bot", "llm-function-call-result"}
)
# Longest text a client may type into the conversation with `send-text`.
MAX_SEND_TEXT_CHARS = 2000
# RTVI clients (by `client-ready`'s `about.library`) that read the protobuf `interruption`
# frame: our page and our Python client. Another RTVI client, such as the official
# `@pipecat-ai/client-js` with its WebSocket transport, knows only `audio` and `message`
# frames (it logs "Unknown frame kind" for each interruption) and flushes its playback on
# RTVI `user-started-speaking` instead, so it is not sent one. A client that never says
# `client-ready` (plain protobuf, as Pipecat's own examples) gets them, as from Pipecat.
INTERRUPTION_FRAME_CLIENTS = frozenset({"ai-operator-web", "ai-operator-client"})


def rtvi_error(message: str, *, fatal: bool = False) -> dict[str, Any]:
    """An RTVI `error` message, as official Pipecat clients expect it."""
    return {"label": RTVI_LABEL, "type": "error", "data": {"error": message, "fatal": fatal}}


def encode_message(message: dict[str, Any]) -> bytes:
    """An RTVI/JSON message as the binary protobuf frame clients receive."""
    frame = frames_pb2.Frame()  # type: ignore[attr-defined]
    frame.message.data = json.dumps(message)
    return bytes(frame.SerializeToString())


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


def check_rtvi_message(data: str) -> None:
    """Raise InputRejected unless `data` is an RTVI client message we handle."""
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as exc:  # deep nesting raises RecursionError
        raise InputRejected("bad-json", f"message frame is not valid JSON ({exc})") from exc
    if not isinstance(message, dict):
        raise InputRejected("bad-json", "message frame must hold a JSON object")
    if message.get("label") != RTVI_LABEL:
        raise InputRejected("bad-rtvi", f"message label must be '{RTVI_LABEL}'")
    msg_type = message.get("type")
    if not isinstance(msg_type, str) or msg_type not in CLIENT_MESSAGE_TYPES:
        shown = str(msg_type)[:40]  # repr below: no control characters into logs
        allowed = ", ".join(sorted(CLIENT_MESSAGE_TYPES))
        raise InputRejected(
            "unsupported-message", f"unsupported message type {shown!r} (accepted: {allowed})"
        )
    if not isinstance(message.get("id"), str):
        raise InputRejected("bad-rtvi", "message 'id' must be a string")
    payload = message.get("data")
    if payload is not None and not isinstance(payload, dict):
        raise InputRejected("bad-rtvi", "message 'data' must be an object")
    if msg_type == "send-text":
        content = (payload or {}).get("content")
        if not isinstance(content, str) or len(content) > MAX_SEND_TEXT_CHARS:
            raise InputRejected(
                "bad-rtvi",
                f"send-text needs 'content': a string of at most {MAX_SEND_TEXT_CHARS} characters",
            )


def client_library(message: dict[str, Any]) -> str | None:
    """`about.library` of an RTVI `client-ready` message, if it names one."""
    about = (message.get("data") or {}).get("about")
    library = about.get("library") if isinstance(about, dict) else None
    return library if isinstance(library, str) else None


class GuardedProtobufSerializer(ProtobufFrameSerializer):
    """Pipecat's protobuf serializer with input validation and error reporting.

    `on_reject(kind, message)` is called (rate limited per kind) for every rejected
    message; the session turns it into an RTVI error for the client. `redact` is applied
    to every string in outgoing messages, so a configured secret can never reach a client.
    The protobuf `interruption` frame goes only to clients that read it (see
    `INTERRUPTION_FRAME_CLIENTS`).
    """

    def __init__(
        self,
        *,
        max_message_bytes: int,
        on_reject: Callable[[str, str], Awaitable[None]],
        session_id: str = "-",
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__()
        self._redact = redact
        self._max_bytes = max_message_bytes
        self._on_reject = on_reject
        self._session_id = session_id
        self._last_report: dict[str, float] = {}
        self.rejected = 0
        # Whether to send `interruption` frames; decided by the client's `client-ready`.
        self.sends_interruptions = True
        # Set by the session once the pipeline is built (pipeline.idle_audio_gate).
        self.audio_gate: IdleAudioGate | None = None

    def check(self, data: str | bytes) -> Frame | None:
        """Validate one client message; return the frame, or raise InputRejected."""
        if isinstance(data, str):
            raise InputRejected(
                "text-message", "expected binary protobuf frames, got a text WebSocket message"
            )
        if len(data) > self._max_bytes:
            raise InputRejected(
                "oversized",
                f"message of {len(data)} bytes exceeds the {self._max_bytes} byte limit",
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
            check_rtvi_message(proto.message.data)
            return None  # parsed again by the parent, which builds the transport frame
        if which in ("text", "transcription", "interruption"):
            raise InputRejected("unsupported-frame", f"clients may not send '{which}' frames")
        raise InputRejected("unknown-frame", "frame has no known kind (expected audio or message)")

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, InterruptionFrame) and not self.sends_interruptions:
            return None
        if self._redact is not None and isinstance(
            frame, (OutputTransportMessageFrame, OutputTransportMessageUrgentFrame)
        ):
            frame = type(frame)(message=self._redact(frame.message))
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            frame = self.check(data)
        except InputRejected as exc:
            await self._reject(exc)
            return None
        if frame is not None:
            return through_gate(self.audio_gate, frame)
        message = await super().deserialize(data)
        if isinstance(message, InputTransportMessageFrame) and (
            message.message.get("type") == "client-ready"
        ):
            library = client_library(message.message)
            self.sends_interruptions = library in INTERRUPTION_FRAME_CLIENTS
        return message

    async def _reject(self, exc: InputRejected) -> None:
        self.rejected += 1
        now = time.monotonic()
        if now - self._last_report.get(exc.kind, -1e9) < ERROR_REPORT_INTERVAL_SECS:
            return
        self._last_report[exc.kind] = now
        logger.warning("[%s] rejected client message: %s", self._session_id, exc)
        await self._on_reject(exc.kind, str(exc))
