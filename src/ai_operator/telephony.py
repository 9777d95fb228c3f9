"""Phone calls through Twilio Media Streams.

Twilio calls `POST /twilio/voice` when a call comes in; we answer with TwiML that connects
the call to a bidirectional `<Stream>` on `WS /twilio/stream`. That socket speaks Twilio's
JSON protocol (`connected`, `start`, `media` with base64 8 kHz mu-law, `mark`, `stop`; we
send `media` and `clear` on barge-in), handled by Pipecat's Twilio serializer, into the same
pipeline as the browser. When an auth token is configured, both requests must carry a valid
`X-Twilio-Signature` (HMAC-SHA1 of the URL and sorted form parameters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

from fastapi import WebSocket

from ai_operator.errors import ProtocolError

logger = logging.getLogger(__name__)

# Twilio sends `connected` then `start` right after the socket opens.
HANDSHAKE_TIMEOUT_SECS = 10.0
TWILIO_SAMPLE_RATE = 8_000


def twiml_connect_stream(stream_url: str, parameters: dict[str, str] | None = None) -> str:
    """TwiML answering a call by streaming it, both ways, to `stream_url`."""
    params = "".join(
        f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>"
        for k, v in (parameters or {}).items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(stream_url)}>{params}</Stream></Connect>"
        "</Response>"
    )


def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 over the URL plus sorted key/values."""
    payload = url + "".join(k + v for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(
    auth_token: str, url: str, params: dict[str, str] | None, signature: str | None
) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(twilio_signature(auth_token, url, params), signature)


def public_url(headers: Any, scheme: str, path: str, configured: str | None) -> str:
    """The URL Twilio used to reach us: the configured public base, else the Host header.

    Behind a TLS-terminating proxy the scheme seen here is http; X-Forwarded-Proto tells
    the truth, and the signature covers the URL exactly as Twilio called it.
    """
    if configured:
        return configured.rstrip("/") + path
    proto = headers.get("x-forwarded-proto", scheme)
    return f"{proto}://{headers.get('host', 'localhost')}{path}"


@dataclass
class CallStart:
    """What Twilio's `start` event tells us about the call."""

    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    media_format: dict[str, Any] = field(default_factory=dict)


async def read_call_start(websocket: WebSocket) -> CallStart:
    """Consume `connected` and `start`; raise ProtocolError if the peer is not Twilio-like."""
    for _ in range(2):
        raw = await websocket.receive_text()
        try:
            message = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError(f"expected Twilio JSON, got {raw[:60]!r}") from exc
        event = message.get("event")
        if event == "connected":
            continue
        if event == "start":
            start = message.get("start") or {}
            stream_sid = start.get("streamSid") or message.get("streamSid")
            if not stream_sid:
                raise ProtocolError("Twilio start event without a streamSid")
            return CallStart(
                stream_sid=stream_sid,
                call_sid=start.get("callSid", ""),
                account_sid=start.get("accountSid", ""),
                custom_parameters=dict(start.get("customParameters") or {}),
                media_format=dict(start.get("mediaFormat") or {}),
            )
        raise ProtocolError(f"unexpected Twilio event {event!r} before start")
    raise ProtocolError("no Twilio start event")


def twilio_serializer(start: CallStart) -> Any:
    """Pipecat's Twilio serializer for this call; hanging up is closing the stream.

    Its `audio_gate`, once the session sets it (pipeline.idle_audio_gate), holds back the
    caller's silence as the WebSocket client's serializer does."""
    from pipecat.serializers.twilio import TwilioFrameSerializer

    from ai_operator.audio_batch import through_gate

    class GatedTwilioSerializer(TwilioFrameSerializer):
        audio_gate: Any = None

        async def deserialize(self, data: str | bytes) -> Any:
            return through_gate(self.audio_gate, await super().deserialize(data))

    # With <Connect><Stream>, closing the socket ends the call (no TwiML follows), so
    # Pipecat's REST-API hang-up, which needs account credentials, is not used.
    return GatedTwilioSerializer(
        stream_sid=start.stream_sid,
        call_sid=start.call_sid or None,
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
