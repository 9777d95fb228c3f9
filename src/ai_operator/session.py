"""One WebSocket connection -> one pipeline run: start, report, cancel, clean up.

The session owns everything of one conversation: the guarded socket (bounded sends,
metered input, see connection.py), the pipeline and its worker, and the reply watchdog
(watchdog.py). However it ends (the client leaves, idles, floods, stops reading, or says
`disconnect-bot`), `run()` returns only after the pipeline has been cancelled and the
socket closed, so nothing of the session outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import enum
import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from fastapi import WebSocket
from pipecat.frames.frames import (
    InterruptionFrame,
    OutputTransportMessageUrgentFrame,
    TTSSpeakFrame,
)
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from ai_operator.audio import INPUT_SAMPLE_RATE, OUTPUT_CHUNK_MS, OUTPUT_SAMPLE_RATE
from ai_operator.config import Settings
from ai_operator.connection import GuardedWebSocket
from ai_operator.faults import Fault, inject_faults
from ai_operator.logcontext import SESSION_ID
from ai_operator.pipeline import build_pipeline, build_services
from ai_operator.protocol import GuardedProtobufSerializer, encode_message, rtvi_error
from ai_operator.providers import Resources
from ai_operator.recorder import ConversationRecorder
from ai_operator.recording import AudioRecording, recording_path
from ai_operator.security import CLOSE_NORMAL, InputRateLimiter, SecretRedactor
from ai_operator.telephony import CallStart, twilio_serializer
from ai_operator.tools import ToolContext, attach_tools
from ai_operator.watchdog import Cause, ReplyWatchdog, Stage, bound_transcription
from ai_operator.worker import LeanPipelineWorker

logger = logging.getLogger(__name__)

# What the bot says when a turn could not be answered (watchdog.py decides when).
APOLOGY_NOT_HEARD = "Sorry, I didn't catch that. Could you say it again?"
APOLOGY_NO_ANSWER = "Sorry, I'm having trouble answering right now. Please try again."


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)  # glibc only


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; elsewhere a no-op).

    Each session allocates from the threads of its audio analysers, and glibc keeps what
    they free in per-thread arenas: without this, resident memory ratchets up to the
    worst case seen and stays there, which hides real leaks behind allocator noise.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class SessionState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    CLOSED = "closed"


_TRANSITIONS = {
    SessionState.NEW: {SessionState.RUNNING, SessionState.CLOSED},
    SessionState.RUNNING: {SessionState.CLOSED},
    SessionState.CLOSED: set(),
}


class IllegalTransition(RuntimeError):
    pass


def _closing_notice(reason: str) -> dict[str, Any]:
    return rtvi_error(f"session closed: {reason}", fatal=True)


class _Parts(NamedTuple):
    worker: PipelineWorker
    watchdog: ReplyWatchdog
    transport: FastAPIWebsocketTransport
    serializer: Any  # GuardedProtobufSerializer, or Twilio's for a phone call


class Session:
    """A conversation on one accepted WebSocket. `run()` returns when it is over."""

    def __init__(
        self,
        websocket: WebSocket,
        settings: Settings,
        resources: Resources,
        *,
        faults: Sequence[Fault] = (),
        call: CallStart | None = None,
    ) -> None:
        """`call` makes this a phone call (Twilio Media Streams) instead of a browser."""
        self.id = uuid.uuid4().hex[:8]
        self._call = call
        self.transport_kind = "twilio" if call is not None else "websocket"
        self.state = SessionState.NEW
        self._websocket = websocket
        self._settings = settings
        self._resources = resources
        self._faults = list(faults)
        self._worker: PipelineWorker | None = None
        self._ending: asyncio.Task[None] | None = None
        self._greeted = False
        self._log = logging.LoggerAdapter(logger, {"session": self.id})
        self._recording: AudioRecording | None = None  # --record-audio

    def _move(self, new: SessionState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"session {self.id}: {self.state.value} -> {new.value}")
        self.state = new

    async def send_message(self, message: dict[str, Any]) -> None:
        """Send an RTVI/JSON message to the client ahead of queued audio."""
        if self._worker is not None and self.state is SessionState.RUNNING:
            await self._worker.queue_frame(OutputTransportMessageUrgentFrame(message=message))

    async def _on_rejected_input(self, kind: str, message: str) -> None:
        if self._resources.metrics is not None:
            self._resources.metrics.rejected_messages.labels(kind).inc()
        await self.send_message(rtvi_error(f"{kind}: {message}"))

    def _end_soon(self, reason: str) -> None:
        """Cancel the pipeline without waiting (called from inside its own tasks)."""
        if self._worker is not None and self._ending is None:
            self._ending = asyncio.create_task(self._worker.cancel(reason=reason))

    async def _on_no_reply(self, stage: Stage, cause: Cause) -> None:
        """The watchdog's verdict: stop whatever is stuck, apologise, tell the client."""
        worker = self._worker
        if worker is None:
            return
        apology = APOLOGY_NOT_HEARD if stage == "stt" else APOLOGY_NO_ANSWER
        await worker.queue_frames([InterruptionFrame(), TTSSpeakFrame(apology)])
        what = {"error": "failed", "empty": "gave an empty answer", "timeout": "did not answer"}
        timeout = self._settings.reply_timeout_secs
        detail = f" within {timeout:.0f} s" if cause == "timeout" else ""
        await self.send_message(rtvi_error(f"{stage} {what[cause]}{detail}; please try again"))

    def _tool_context(self) -> ToolContext:
        history = self._resources.history

        def save_message(body: str, caller: str, callback: str) -> None:
            if history is not None:
                history.add_message(self.id, body, caller, callback)

        return ToolContext(
            conversation_id=self.id, timezone=self._settings.timezone, save_message=save_message
        )

    def _build(self, guarded: GuardedWebSocket) -> _Parts:
        settings = self._settings
        redactor = SecretRedactor.from_settings(settings)
        serializer: Any
        if self._call is not None:
            serializer = twilio_serializer(self._call)
        else:
            serializer = GuardedProtobufSerializer(
                max_message_bytes=settings.max_message_bytes,
                on_reject=self._on_rejected_input,
                session_id=self.id,
                redact=redactor.value if redactor else None,
            )
        transport = FastAPIWebsocketTransport(
            websocket=guarded,  # type: ignore[arg-type]  # duck-typed Starlette WebSocket
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_in_sample_rate=INPUT_SAMPLE_RATE,
                audio_out_sample_rate=OUTPUT_SAMPLE_RATE,
                audio_out_10ms_chunks=OUTPUT_CHUNK_MS // 10,
                serializer=serializer,
                allowed_origins=[],  # checked by the server before the socket is accepted
            ),
        )
        services = build_services(settings, self._resources)
        inject_faults(services, self._faults)
        bound_transcription(services.stt, settings.reply_timeout_secs)
        if settings.record_audio:
            history = self._resources.history
            self._recording = AudioRecording(
                recording_path(settings.recordings_dir, self.id),
                on_created=functools.partial(history.set_recording, self.id) if history else None,
                log=self._log,
            )
        taping = self._recording.processor if self._recording is not None else None
        pipeline, parts = build_pipeline(settings, transport, services, taping)
        serializer.audio_gate = parts.audio_gate
        if settings.tools_enabled():
            attach_tools(services.llm, parts.context, self._tool_context())
        watchdog = ReplyWatchdog(
            timeout_secs=settings.reply_timeout_secs, on_no_reply=self._on_no_reply, log=self._log
        )
        recorder = ConversationRecorder(
            conversation_id=self.id,
            providers={"stt": settings.stt, "llm": settings.llm, "tts": settings.tts},
            history=self._resources.history,
            metrics=self._resources.metrics,
            notify=self.send_message if self._call is None else None,
        )
        parts.heard.on_spoken = recorder.bot_words_spoken
        worker = LeanPipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=INPUT_SAMPLE_RATE,
                audio_out_sample_rate=OUTPUT_SAMPLE_RATE,
                enable_metrics=True,
                enable_usage_metrics=False,
            ),
            conversation_id=self.id,
            observers=[watchdog, *recorder.observers()],
            idle_timeout_secs=settings.idle_timeout_secs,
            cancel_on_idle_timeout=False,  # on_idle_timeout below closes with a reason
        )
        return _Parts(worker, watchdog, transport, serializer)

    async def run(self) -> None:
        self._move(SessionState.RUNNING)
        SESSION_ID.set(self.id)
        settings = self._settings
        guarded = GuardedWebSocket(
            self._websocket,
            limiter=InputRateLimiter(settings.rate_limit_messages, settings.rate_limit_bytes),
            send_timeout_secs=settings.send_timeout_secs,
            encode=encode_message if self._call is None else None,
            notice=_closing_notice,
            on_end=self._end_soon,
            log=self._log,
        )
        worker, watchdog, transport, serializer = self._build(guarded)
        self._worker = worker

        async def greet() -> None:
            if self._greeted:
                return  # a client repeating client-ready does not get greeted again
            self._greeted = True
            self._log.info("client ready")
            if settings.greeting:
                await worker.queue_frame(TTSSpeakFrame(settings.greeting))

        @worker.rtvi.event_handler("on_client_ready")
        async def on_client_ready(_rtvi: Any) -> None:
            await greet()

        if self._call is not None:  # a phone call has no RTVI handshake: greet at once

            @transport.event_handler("on_client_connected")
            async def on_client_connected(_transport: Any, _ws: Any) -> None:
                await greet()

        @worker.event_handler("on_idle_timeout")
        async def on_idle_timeout(_worker: Any) -> None:
            await guarded.end(CLOSE_NORMAL, f"idle for {settings.idle_timeout_secs:.0f} s")

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _ws: Any) -> None:
            if not guarded.ended:
                self._log.info("client disconnected")
            await worker.cancel(reason="client disconnected")

        history, metrics = self._resources.history, self._resources.metrics
        if history is not None:
            history.start_conversation(
                self.id,
                transport=self.transport_kind,
                providers={"stt": settings.stt, "llm": settings.llm, "tts": settings.tts},
            )
        if metrics is not None:
            metrics.sessions.labels(self.transport_kind).inc()
            metrics.active_sessions.inc()
        self._log.info("session started (%s)", self.transport_kind)
        # No forced collection as the runner ends: a full pass stalls every other call on the
        # worker; the server forces one only once the worker is idle (heap.collect_if_idle).
        runner = WorkerRunner(handle_sigint=False)
        try:
            await runner.add_workers(worker)
            await runner.run()
        finally:
            if self._recording is not None:
                await self._recording.close()  # before ended_at: then the file is final
            if history is not None:
                history.end_conversation(self.id)
            if metrics is not None:
                metrics.active_sessions.dec()
            watchdog.close()
            if self._ending is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._ending
            await guarded.close()
            self._worker = None
            self._move(SessionState.CLOSED)
            self._log.info(
                "session over: %s (%d messages in, %d rejected, %d apologies)",
                guarded.outcome(),
                guarded.received_messages,
                getattr(serializer, "rejected", 0),
                watchdog.fired,
            )
            await asyncio.to_thread(release_free_memory)
