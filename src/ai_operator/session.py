"""One WebSocket connection -> one pipeline run: start, report, cancel, clean up."""

from __future__ import annotations

import enum
import logging
import uuid
from typing import Any

from fastapi import WebSocket
from pipecat.frames.frames import OutputTransportMessageUrgentFrame, TTSSpeakFrame
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from ai_operator.audio import INPUT_SAMPLE_RATE, OUTPUT_CHUNK_MS, OUTPUT_SAMPLE_RATE
from ai_operator.config import Settings
from ai_operator.pipeline import build_pipeline, build_services
from ai_operator.protocol import GuardedProtobufSerializer, rtvi_error
from ai_operator.providers import Resources

logger = logging.getLogger(__name__)

# A session with no user or bot activity for this long is closed.
IDLE_TIMEOUT_SECS = 300.0


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


class Session:
    """A conversation on one accepted WebSocket. `run()` returns when it is over."""

    def __init__(self, websocket: WebSocket, settings: Settings, resources: Resources) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.state = SessionState.NEW
        self._websocket = websocket
        self._settings = settings
        self._resources = resources
        self._worker: PipelineWorker | None = None
        self._log = logging.LoggerAdapter(logger, {"session": self.id})

    def _move(self, new: SessionState) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"session {self.id}: {self.state.value} -> {new.value}")
        self.state = new

    async def send_message(self, message: dict[str, Any]) -> None:
        """Send an RTVI/JSON message to the client ahead of queued audio."""
        if self._worker is not None and self.state is SessionState.RUNNING:
            await self._worker.queue_frame(OutputTransportMessageUrgentFrame(message=message))

    async def _on_rejected_input(self, kind: str, message: str) -> None:
        await self.send_message(rtvi_error(f"{kind}: {message}"))

    async def run(self) -> None:
        self._move(SessionState.RUNNING)
        settings = self._settings
        serializer = GuardedProtobufSerializer(
            max_message_bytes=settings.max_message_bytes,
            on_reject=self._on_rejected_input,
            session_id=self.id,
        )
        transport = FastAPIWebsocketTransport(
            websocket=self._websocket,
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
        pipeline, _ = build_pipeline(settings, transport, services)
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=INPUT_SAMPLE_RATE,
                audio_out_sample_rate=OUTPUT_SAMPLE_RATE,
                enable_metrics=True,
                enable_usage_metrics=False,
            ),
            conversation_id=self.id,
            idle_timeout_secs=IDLE_TIMEOUT_SECS,
            cancel_runner_on_idle_timeout=False,
        )
        self._worker = worker

        @worker.rtvi.event_handler("on_client_ready")
        async def on_client_ready(_rtvi: Any) -> None:
            self._log.info("client ready")
            if settings.greeting:
                await worker.queue_frame(TTSSpeakFrame(settings.greeting))

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _ws: Any) -> None:
            self._log.info("client disconnected")
            await worker.cancel(reason="client disconnected")

        self._log.info("session started")
        try:
            await WorkerRunner(handle_sigint=False).run(worker)
        finally:
            self._worker = None
            self._move(SessionState.CLOSED)
            self._log.info("session closed (%d rejected messages)", serializer.rejected)
