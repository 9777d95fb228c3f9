"""build_pipeline(): the one place a conversation pipeline is assembled.

    client audio -> transport.input -> EchoGate -> AudioBatcher -> STT -> user aggregator
                 -> LLM -> TTS -> OutputPacer -> transport.output -> HeardTextFilter
                 -> assistant aggregator

(AudioBatcher, audio_batch.py, joins the caller's frames into whole VAD windows.)

The user aggregator runs Silero VAD and the turn strategies: `BargeInStrategy` decides when
the user takes the floor (pausing the bot while it tells a backchannel from an interruption)
and Smart Turn v3, behind `PatientTurnStopStrategy`, decides when the user's turn is over.
One `BotFloor` (floor.py) is shared by the turn-taking parts so they agree on what the bot
is saying and what has played. Pipecat's PipelineWorker adds its RTVI processor in front,
so official clients get the standard events without anything extra here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from ai_operator.audio import INPUT_SAMPLE_RATE
from ai_operator.audio_batch import AudioBatcher, CallerAudioStop, IdleAudioGate
from ai_operator.barge_in import BargeInRules, BargeInStrategy, ObservedVAD, OverlapState
from ai_operator.config import Settings
from ai_operator.end_of_turn import PatientTurnStopStrategy
from ai_operator.floor import BotFloor, EchoGate, HeardTextFilter, OutputPacer
from ai_operator.providers import Resources, factory
from ai_operator.turn_models import SharedSmartTurnAnalyzer, TurnModels, silence_peak
from ai_operator.turns import Vocabulary, parse_word_list, sounds_unfinished

# Silence after the caller's last sound that the pipeline still gets before the idle gate
# holds any back: more than the 400 ms the VAD's volume is measured over, so it has settled
# into quiet (the VAD's own stop takes 0.2 s of it).
IDLE_GATE_SETTLE_SECS = 0.5


@dataclass
class Services:
    """The three per-session services, built from the registry, and the shared turn models."""

    stt: Any
    llm: Any
    tts: Any
    turn: TurnModels | None = None  # None: this session loads its own VAD and Smart Turn


def build_services(settings: Settings, resources: Resources) -> Services:
    return Services(
        stt=factory("stt", settings.stt)(settings, resources),
        llm=factory("llm", settings.llm)(settings, resources),
        tts=factory("tts", settings.tts)(settings, resources),
        turn=resources.turn,
    )


def vad_params(settings: Settings) -> VADParams:
    return VADParams(
        confidence=settings.vad_confidence,
        start_secs=settings.vad_start_secs,
        stop_secs=settings.vad_stop_secs,
        min_volume=settings.vad_min_volume,
    )


def vocabulary(settings: Settings) -> Vocabulary:
    return Vocabulary(
        backchannel_words=parse_word_list(settings.backchannel_words),
        backchannel_phrases=parse_word_list(settings.backchannel_phrases),
        interruption_cues=parse_word_list(settings.interruption_cues),
        unfinished_endings=parse_word_list(settings.unfinished_endings),
        question_openers=parse_word_list(settings.question_openers),
        request_openers=parse_word_list(settings.request_openers),
    )


def turn_strategies(
    settings: Settings,
    floor: BotFloor,
    vad: ObservedVAD,
    models: TurnModels,
    turn_text: Callable[[], str] | None = None,
    answer_again: Callable[[], Awaitable[None]] | None = None,
    words: Vocabulary | None = None,
    dip_secs: float = 0.0,
) -> UserTurnStrategies:
    """Barge-in rules start the user's turn; Smart Turn v3 (kept patient) ends it.

    `turn_text` (the user aggregator's words so far) lets the LLM start before the end
    of the turn is certain (end_of_turn.py), when `llm_speculate` is on; `answer_again`
    (the LLM on the conversation so far) answers a confirmed turn whose speculative answer
    the LLM withdrew. `words`: the settings' word lists, if already parsed. `dip_secs`:
    Smart Turn's early verdict also starts on a dip in the caller's audio, as the early
    Whisper's transcript does (turn_models.SharedSmartTurnAnalyzer).

    Smart Turn counts its `stop_secs` from the VAD's stop, which comes `vad_stop_secs`
    after the speech ended: the difference makes `turn_max_wait_secs` the longest silence
    after the speech, as for the unfinished-words wait. Pipecat's default of 3 s made
    clear questions wait 3 s.
    """
    words = words if words is not None else vocabulary(settings)
    analyzer = SharedSmartTurnAnalyzer(
        session=models.smart_turn,
        executor=models.smart_turn_executor,
        vad=vad if settings.smart_turn_early else None,
        quiet_secs=settings.early_quiet_secs,
        dip_secs=dip_secs if settings.smart_turn_early else 0.0,
        sample_rate=INPUT_SAMPLE_RATE,
        params=SmartTurnParams(
            stop_secs=max(settings.turn_max_wait_secs - settings.vad_stop_secs, 0.0)
        ),
    )
    smart_turn = TurnAnalyzerUserTurnStopStrategy(turn_analyzer=analyzer)
    rules = BargeInRules(
        backchannel_max_secs=settings.backchannel_max_secs,
        min_words=settings.barge_in_min_words,
        verdict_timeout_secs=settings.backchannel_verdict_timeout_secs,
        words_wait_secs=settings.backchannel_words_wait_secs,
        decision_margin_secs=settings.barge_in_decision_margin_secs,
        continuation_secs=settings.overlap_continuation_secs,
        echo_share=settings.echo_word_share,
        vocabulary=words,
    )
    patient = PatientTurnStopStrategy(
        smart_turn,
        vad,
        max_wait_secs=settings.turn_max_wait_secs,
        statement_wait_secs=min(settings.turn_statement_wait_secs, settings.turn_max_wait_secs),
        complete_probability=settings.turn_complete_probability,
        vocabulary=words,
        turn_text=turn_text if settings.llm_speculate else None,
        answer_again=answer_again,
    )
    return UserTurnStrategies(start=[BargeInStrategy(floor, vad, rules)], stop=[patient])


@dataclass
class ConversationParts:
    """What `build_pipeline` wires around the services, for the session and for tests."""

    aggregators: LLMContextAggregatorPair
    context: LLMContext
    floor: BotFloor
    echo_gate: EchoGate
    heard: HeardTextFilter
    # For the session's serializer to ask about each caller frame; None: every frame passes.
    audio_gate: IdleAudioGate | None = None


def build_pipeline(
    settings: Settings,
    transport: BaseTransport,
    services: Services,
    recorder: FrameProcessor | None = None,
) -> tuple[Pipeline, ConversationParts]:
    """`recorder` (recording.py), when given, goes right after the output transport: it
    sees the caller's audio and the bot's audio as sent."""
    context = LLMContext()
    floor = BotFloor(
        lead_secs=settings.playout_lead_secs,
        grace_secs=settings.floor_grace_secs,
        recent_words=settings.echo_recent_words,
        secs_per_char=settings.speech_secs_per_char,
    )
    models = services.turn or TurnModels.load()
    vad = ObservedVAD(
        session=models.silero,
        silence_dbfs=settings.vad_silence_dbfs,
        sample_rate=INPUT_SAMPLE_RATE,
        params=vad_params(settings),
    )
    words = vocabulary(settings)
    follow_vad = getattr(services.stt, "follow_vad", None)  # local Whisper: early_stt.py
    early_whisper = follow_vad is not None and settings.whisper_early
    if follow_vad is not None and early_whisper:
        follow_vad(
            vad,
            eager=settings.llm_speculate,
            quiet_secs=settings.early_quiet_secs,
            dip_secs=settings.whisper_early_dip_secs,
            unfinished=lambda text: sounds_unfinished(text, words),
        )
    aggregators: LLMContextAggregatorPair | None = None

    def turn_text() -> str:  # the user's message as the user aggregator would write it now
        return aggregators.user().aggregation_string() if aggregators else ""

    async def answer_again() -> None:  # the LLM on the conversation so far
        if aggregators is not None:
            await aggregators.user().push_context_frame()

    # Smart Turn follows the early Whisper onto dips in the audio: the two run side by
    # side, one thread each, and are done before the LLM starts on the transcript (the LLM
    # sharing the cores with Smart Turn took twice as long to its first token). Not with a
    # cloud STT: nothing would wait for that verdict sooner, and the dips cost CPU.
    dip_secs = settings.whisper_early_dip_secs if early_whisper else 0.0
    strategies = turn_strategies(
        settings, floor, vad, models, turn_text, answer_again, words, dip_secs=dip_secs
    )
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(vad_analyzer=vad, user_turn_strategies=strategies),
    )
    echo_gate = EchoGate(
        floor,
        margin_db=settings.echo_margin_db,
        tail_secs=settings.echo_tail_secs,
        hangover_secs=settings.echo_double_talk_hangover_secs,
    )
    heard = HeardTextFilter(floor, context)
    # After the echo gate, which judges each frame as the client sent it (a joined frame
    # would mix a quiet onset with louder speech).
    joining = settings.audio_batch_ms or settings.audio_vad_windows
    batching = (
        [
            AudioBatcher(
                batch_ms=settings.audio_batch_ms, vad=vad, windows=settings.audio_vad_windows
            )
        ]
        if joining
        else []
    )
    # The recorder takes the caller's audio from the stream; without it nothing after the
    # user aggregator reads that audio.
    audio_stop = [] if recorder is not None else [CallerAudioStop()]
    audio_gate = idle_audio_gate(settings, vad, strategies) if recorder is None else None
    pipeline = Pipeline(
        [
            transport.input(),
            echo_gate,
            *batching,
            services.stt,
            aggregators.user(),
            *audio_stop,
            services.llm,
            services.tts,
            OutputPacer(floor),
            transport.output(),
            *([recorder] if recorder is not None else []),
            heard,
            aggregators.assistant(),
        ]
    )
    return pipeline, ConversationParts(aggregators, context, floor, echo_gate, heard, audio_gate)


def idle_audio_gate(
    settings: Settings, vad: ObservedVAD, strategies: UserTurnStrategies
) -> IdleAudioGate | None:
    """The gate that holds back the caller's silence while the turn-taking parts wait on
    nothing (audio_batch.IdleAudioGate): the VAD hears quiet and the barge-in strategy is
    listening, neither judging an overlap nor inside a user turn (whose end Smart Turn and
    the end-of-turn waits count in seconds of caller audio). None when it is off, or when
    a recording needs the whole caller track."""
    peak = silence_peak(settings.vad_silence_dbfs)
    if not settings.audio_idle_gate or not peak:
        return None
    barge_in = next(s for s in strategies.start or [] if isinstance(s, BargeInStrategy))

    def idle() -> bool:
        return vad.latest_state is VADState.QUIET and barge_in.state is OverlapState.LISTENING

    return IdleAudioGate(silence_peak=peak, settle_secs=IDLE_GATE_SETTLE_SECS, idle=idle)
