"""Turns out of the frame stream: one observer feeds history, metrics and the client's readout.

The recorder watches the pipeline (never sits in it, so it adds no hop to the audio path):
user transcripts and turn boundaries, the bot's words as the output transport releases them
(what the user actually heard), interruptions, errors, and Pipecat's per-turn latency
breakdown. Each finished turn is written to history, counted in metrics and, for bot
turns, sent to the client as a `turn-metrics` server message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    ErrorFrame,
    InterruptionFrame,
    OutputTransportMessageUrgentFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.observers.user_bot_latency_observer import LatencyBreakdown, UserBotLatencyObserver

from ai_operator.history import HistoryStore, Turn
from ai_operator.metrics import Metrics
from ai_operator.protocol import rtvi_server_message

logger = logging.getLogger(__name__)

Notify = Callable[[dict[str, Any]], Awaitable[None]]


def stage_of(processor_name: str) -> str | None:
    """'LocalWhisperSTTService#0' -> 'stt'; None for processors that are not a stage."""
    upper = processor_name.upper()
    for stage in ("STT", "LLM", "TTS"):
        if stage in upper:
            return stage.lower()
    return None


class ConversationRecorder(BaseObserver):
    """Observe one session's pipeline; see the module docstring."""

    def __init__(
        self,
        *,
        conversation_id: str,
        providers: dict[str, str],
        history: HistoryStore | None,
        metrics: Metrics | None,
        notify: Notify | None,
    ) -> None:
        # First pushes only: seeing every hop of every audio frame cost a sizeable share
        # of the event loop. The bot's words, which count once the output transport
        # releases them (a later hop), come through `bot_words_spoken` instead.
        super().__init__(observe_every_push=False)
        self.conversation_id = conversation_id
        self._providers = providers
        self._history = history
        self._metrics = metrics
        self._notify = notify
        self._user_words: list[str] = []
        self._user_started: float | None = None
        self._bot_words: list[str] = []
        self._bot_started: float | None = None
        self._bot_interrupted = False
        self._latencies: dict[str, float] = {}
        self.turns: list[Turn] = []
        self.latency = UserBotLatencyObserver()
        self.latency.add_event_handler("on_latency_breakdown", self._on_breakdown)

    def observers(self) -> list[BaseObserver]:
        """Register all of these with the worker (the latency observer needs its own setup)."""
        return [self, self.latency]

    def bot_words_spoken(self, text: str) -> None:
        """Bot words whose audio starts playing (HeardTextFilter.on_spoken)."""
        self._bot_words.append(text.strip())

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        now = time.time()
        if isinstance(frame, UserStartedSpeakingFrame):
            self._user_started = self._user_started or now
        elif isinstance(frame, TranscriptionFrame):
            self._user_started = self._user_started or now
            self._user_words.append(frame.text.strip())
        elif isinstance(frame, UserStoppedSpeakingFrame):
            await self._finish_user_turn(now)
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_started = self._bot_started or now
        elif isinstance(frame, InterruptionFrame):
            if self._bot_started is not None:
                self._bot_interrupted = True
                await self._finish_bot_turn(now)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            await self._finish_bot_turn(now)
        elif isinstance(frame, OutputTransportMessageUrgentFrame) and self._metrics is not None:
            notice = frame.message.get("data") if isinstance(frame.message, dict) else None
            if isinstance(notice, dict) and notice.get("type") == "provider-failover":
                stage, provider = str(notice.get("stage")), str(notice.get("provider"))
                self._metrics.failovers.labels(stage, provider).inc()
        elif isinstance(frame, ErrorFrame) and self._metrics is not None:
            stage = stage_of(getattr(frame.processor, "name", "") or "") or "pipeline"
            self._metrics.errors.labels(stage, self._providers.get(stage, "-")).inc()

    async def _on_breakdown(self, _observer: Any, breakdown: LatencyBreakdown) -> None:
        latencies: dict[str, float] = {"voice_to_voice": breakdown.total_secs}
        if breakdown.user_turn_secs is not None:
            latencies["endpointing"] = breakdown.user_turn_secs
        for ttfb in breakdown.ttfb:
            stage = stage_of(ttfb.processor)
            if stage and stage not in latencies:
                latencies[stage] = ttfb.duration_secs
        self._latencies = latencies
        if self._metrics is not None:
            self._metrics.voice_to_voice.observe(breakdown.total_secs)
            for stage in ("stt", "llm", "tts"):
                if stage in latencies:
                    provider = self._providers.get(stage, "-")
                    self._metrics.stage_ttfb.labels(stage, provider).observe(latencies[stage])
        if self._notify is not None:
            await self._notify(rtvi_server_message({"type": "turn-metrics", **latencies}))

    async def _finish_user_turn(self, now: float) -> None:
        text = " ".join(w for w in self._user_words if w)
        started = self._user_started or now
        self._user_words, self._user_started = [], None
        self._latencies = {}  # what follows is measured from this turn's end
        if text:
            self._record(Turn("user", text, started, now))

    async def _finish_bot_turn(self, now: float) -> None:
        if self._bot_started is None:
            return
        text = " ".join(w for w in self._bot_words if w)
        turn = Turn(
            "bot", text, self._bot_started, now, self._bot_interrupted, dict(self._latencies)
        )
        self._bot_words, self._bot_started = [], None
        self._bot_interrupted, self._latencies = False, {}
        logger.debug("bot turn finished: %r interrupted=%s", text, turn.interrupted)
        if turn.interrupted and self._metrics is not None:
            self._metrics.interruptions.inc()
        if text:
            self._record(turn)

    def _record(self, turn: Turn) -> None:
        self.turns.append(turn)
        if self._history is not None:
            self._history.add_turn(self.conversation_id, turn)
        if self._metrics is not None:
            self._metrics.turns.labels(turn.speaker).inc()
