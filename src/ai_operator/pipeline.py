"""build_pipeline(): the one place a conversation pipeline is assembled.

    client audio -> transport.input -> STT -> user turn (Silero VAD + Smart Turn) -> LLM
                 -> TTS -> transport.output -> assistant context

Pipecat's PipelineWorker adds its RTVI processor in front, so official clients get the
standard events (transcripts, speaking state, metrics) without anything extra here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy, VADUserTurnStartStrategy
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from ai_operator.audio import INPUT_SAMPLE_RATE
from ai_operator.config import Settings
from ai_operator.providers import Resources, factory


@dataclass
class Services:
    """The three per-session services, built from the registry."""

    stt: Any
    llm: Any
    tts: Any


def build_services(settings: Settings, resources: Resources) -> Services:
    return Services(
        stt=factory("stt", settings.stt)(settings, resources),
        llm=factory("llm", settings.llm)(settings, resources),
        tts=factory("tts", settings.tts)(settings, resources),
    )


def turn_strategies(settings: Settings) -> UserTurnStrategies:
    """VAD (or a transcript) starts the user's turn; Smart Turn v3 decides when it ends.

    Smart Turn's `stop_secs` is the longest silence we wait when it judges the utterance
    incomplete; Pipecat's default of 3 s made clear questions wait 3 s.
    """
    analyzer = LocalSmartTurnAnalyzerV3(
        sample_rate=INPUT_SAMPLE_RATE,
        params=SmartTurnParams(stop_secs=settings.turn_max_wait_secs),
    )
    return UserTurnStrategies(
        start=[VADUserTurnStartStrategy(), TranscriptionUserTurnStartStrategy()],
        stop=[TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer)],
    )


def build_pipeline(
    settings: Settings, transport: BaseTransport, services: Services
) -> tuple[Pipeline, LLMContextAggregatorPair]:
    context = LLMContext()
    vad = SileroVADAnalyzer(
        sample_rate=INPUT_SAMPLE_RATE,
        params=VADParams(
            confidence=settings.vad_confidence,
            start_secs=settings.vad_start_secs,
            stop_secs=settings.vad_stop_secs,
        ),
    )
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad, user_turn_strategies=turn_strategies(settings)
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            services.stt,
            aggregators.user(),
            services.llm,
            services.tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    return pipeline, aggregators
