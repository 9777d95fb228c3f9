"""build_pipeline: where the caller's frames are joined into whole VAD windows, and when
their silence is held back."""

from __future__ import annotations

from typing import Any

import pytest
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import InputAudioRawFrame
from pipecat.processors.frame_processor import FrameProcessor

from ai_operator.audio_batch import AudioBatcher, IdleAudioGate
from ai_operator.barge_in import BargeInStrategy, ObservedVAD, OverlapState
from ai_operator.config import Settings
from ai_operator.floor import BotFloor, EchoGate
from ai_operator.pipeline import (
    IDLE_GATE_SETTLE_SECS,
    Services,
    build_pipeline,
    idle_audio_gate,
    turn_strategies,
    vad_params,
)
from ai_operator.turn_models import SharedSmartTurnAnalyzer, TurnModels


class Named(FrameProcessor):
    def __init__(self, name: str) -> None:
        super().__init__(name=name)


class EarlyWhisper(Named):
    """An STT that follows the VAD, as the local Whisper does."""

    def follow_vad(self, vad: Any, **kwargs: Any) -> None:
        self.vad = vad


class Transport:
    def __init__(self) -> None:
        self._input, self._output = Named("in"), Named("out")

    def input(self) -> FrameProcessor:
        return self._input

    def output(self) -> FrameProcessor:
        return self._output


@pytest.fixture(scope="module")
def models() -> TurnModels:
    return TurnModels.load()


def caller_path(stt: FrameProcessor, models: TurnModels, **settings: Any) -> list[type | str]:
    """The processors from the input transport up to the STT and one past it."""
    services = Services(stt=stt, llm=Named("llm"), tts=Named("tts"), turn=models)
    pipeline, _ = build_pipeline(Settings(**settings), Transport(), services)  # type: ignore[arg-type]
    names: list[type | str] = []
    for p in pipeline.processors[1:]:  # after the pipeline's own source
        names.append(p.name if isinstance(p, Named) else type(p))
        if p is stt:
            break
    return [*names, type(pipeline.processors[len(names) + 1])]


def test_a_streaming_stt_gets_the_joined_frames_after_the_echo_gate(models):
    stt = Named("stt")
    assert caller_path(stt, models)[:4] == ["in", EchoGate, AudioBatcher, "stt"]


def test_the_early_whisper_too_gets_the_joined_frames_and_follows_the_vad(models):
    # It hears the VAD's verdicts from the VAD itself (barge_in.ObservedVAD's listeners),
    # so joined frames do not delay them.
    stt = EarlyWhisper("stt")
    assert caller_path(stt, models)[:4] == ["in", EchoGate, AudioBatcher, "stt"]
    assert isinstance(stt.vad, ObservedVAD)


def test_without_joining_there_is_no_batcher(models):
    path = caller_path(Named("stt"), models, audio_vad_windows=False)
    assert path[:3] == ["in", EchoGate, "stt"] and AudioBatcher not in path


def test_smart_turn_follows_the_early_whisper_onto_dips_and_only_it(models, monkeypatch):
    """With the local Whisper transcribing early, the early Whisper and the early Smart
    Turn both start on a dip in the audio; with any other STT, Smart Turn waits for the
    VAD's pause (a dip verdict would be CPU for nothing)."""
    import ai_operator.pipeline as pipeline_module

    dips: list[float] = []

    class Recording(SharedSmartTurnAnalyzer):
        def __init__(self, **kwargs: Any) -> None:
            dips.append(kwargs.get("dip_secs", 0.0))
            super().__init__(**kwargs)

    class RecordingWhisper(EarlyWhisper):
        def follow_vad(self, vad: Any, **kwargs: Any) -> None:
            self.dip_secs = kwargs["dip_secs"]

    monkeypatch.setattr(pipeline_module, "SharedSmartTurnAnalyzer", Recording)
    whisper = RecordingWhisper("stt")
    caller_path(whisper, models, whisper_early_dip_secs=0.06)
    assert whisper.dip_secs == 0.06 and dips == [0.06]
    caller_path(Named("stt"), models, whisper_early_dip_secs=0.06)  # a cloud STT
    assert dips == [0.06, 0.0]
    caller_path(RecordingWhisper("stt"), models, whisper_early=False)
    assert dips == [0.06, 0.0, 0.0]
    caller_path(RecordingWhisper("stt"), models, smart_turn_early=False)
    assert dips[-1] == 0.0


def test_the_idle_gate_holds_silence_only_while_turn_taking_waits_on_nothing(models):
    """Silence is held back only with the VAD quiet and the barge-in strategy listening:
    inside a user turn, or while an overlap is judged, Smart Turn and the end-of-turn
    and backchannel waits count seconds of the caller's audio, silence included."""
    settings = Settings()
    floor = BotFloor(lead_secs=0.04, grace_secs=0.3, recent_words=8, secs_per_char=0.06)
    vad = ObservedVAD(
        session=models.silero,
        silence_dbfs=settings.vad_silence_dbfs,
        sample_rate=16_000,
        params=vad_params(settings),
    )
    strategies = turn_strategies(settings, floor, vad, models)
    gate = idle_audio_gate(settings, vad, strategies)
    assert gate is not None
    barge_in = next(s for s in strategies.start or [] if isinstance(s, BargeInStrategy))
    silent = InputAudioRawFrame(audio=bytes(640), sample_rate=16_000, num_channels=1)
    settle = round(IDLE_GATE_SETTLE_SECS / 0.02)
    assert all(gate.admit(silent) for _ in range(settle)) and not gate.admit(silent)
    for state in (VADState.STARTING, VADState.SPEAKING, VADState.STOPPING):
        vad.latest_state = state
        assert gate.admit(silent), state
    vad.latest_state = VADState.QUIET
    for overlap in (OverlapState.USER_TURN, OverlapState.OVERLAP, OverlapState.JUDGING):
        barge_in.state = overlap
        assert gate.admit(silent), overlap
    barge_in.state = OverlapState.LISTENING
    assert not gate.admit(silent)


def test_no_idle_gate_when_off_without_a_silence_level_or_for_a_recorded_call(models):
    def gate(recorder: FrameProcessor | None = None, **settings: Any) -> Any:
        services = Services(stt=Named("stt"), llm=Named("llm"), tts=Named("tts"), turn=models)
        _, parts = build_pipeline(Settings(**settings), Transport(), services, recorder)  # type: ignore[arg-type]
        return parts.audio_gate

    assert isinstance(gate(), IdleAudioGate)
    assert gate(audio_idle_gate=False) is None
    assert gate(vad_silence_dbfs=-100) is None
    assert gate(Named("recorder")) is None
