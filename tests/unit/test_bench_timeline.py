"""Turning a received timeline into turn latencies and barge-in stop times (bench/)."""

from __future__ import annotations

import numpy as np
import pytest

from ai_operator.client import Event
from bench.questions import speech_bounds
from bench.timeline import analyse_barge_in, analyse_turn, audio_stop_time

LOUD = (np.full(640, 3000, dtype="<i2")).tobytes()
QUIET = bytes(1280)


def _metric(t: float, metric: str, processor: str, value: float) -> Event:
    return Event(t, "metrics", {metric: [{"processor": processor, "value": value}]})


def _turn_events() -> list[Event]:
    """Speech ends at 10.0; the bot's first audible audio arrives at 11.0."""
    return [
        Event(8.5, "user-started-speaking", None),
        Event(10.2, "audio", QUIET),  # a silent chunk does not count as the answer
        _metric(10.55, "processing", "WhisperSTTService#0", 0.3),
        Event(10.56, "user-transcription", {"text": "What is the capital of France?"}),
        Event(10.6, "user-stopped-speaking", None),
        Event(10.6, "bot-llm-started", None),
        _metric(10.7, "ttfb", "OpenAILLMService#0", 0.1),
        Event(10.9, "bot-tts-started", None),
        _metric(10.98, "ttfb", "PiperTTSService#0", 0.08),
        Event(10.98, "audio", QUIET),  # the voice's leading silence
        Event(11.0, "audio", LOUD),
        Event(11.0, "bot-output", {"text": "Paris is", "spoken": False, "will_be_spoken": True}),
        Event(14.0, "bot-stopped-speaking", None),
    ]


def test_turn_stages_add_up_to_voice_to_voice():
    turn = analyse_turn(_turn_events(), "q", speech_start=8.0, speech_end=10.0)
    assert turn.error is None
    assert turn.voice_to_voice == pytest.approx(1.0)
    assert turn.transcript == "What is the capital of France?"
    assert turn.stages["stt"] == pytest.approx(0.3)
    assert turn.stages["endpoint"] == pytest.approx(0.3)  # 0.6 to turn end, minus STT
    assert turn.stages["llm"] == pytest.approx(0.1)
    assert turn.stages["phrase"] == pytest.approx(0.2)  # first token 10.7 -> TTS 10.9
    assert turn.stages["tts"] == pytest.approx(0.08)
    assert turn.stages["silence"] == pytest.approx(0.02)
    assert turn.stages["transport"] == pytest.approx(0.0)
    assert sum(turn.stages.values()) == pytest.approx(turn.voice_to_voice)
    assert not turn.early_response
    assert turn.first_phrase == "Paris is"


def test_the_first_phrase_is_the_first_segment_to_be_spoken_after_the_question():
    """Not the previous answer's segments (reported spoken when they finish playing), nor
    text the TTS will not speak."""
    events = [
        Event(9.0, "bot-output", {"text": "Earlier answer.", "spoken": False}),
        Event(10.95, "bot-output", {"text": "Earlier answer.", "spoken": True}),
        Event(10.96, "bot-output", {"text": "[thinking]", "will_be_spoken": False}),
        *_turn_events(),
    ]
    turn = analyse_turn(sorted(events, key=lambda e: e.t), "q", speech_start=8.0, speech_end=10.0)
    assert turn.first_phrase == "Paris is"


def test_a_late_metrics_message_still_counts():
    """Pipecat may send the TTS's TTFB just after the audio it describes."""
    events = [e for e in _turn_events() if not (e.kind == "metrics" and e.t == 10.98)]
    events.append(_metric(11.05, "ttfb", "PiperTTSService#0", 0.08))
    turn = analyse_turn(events, "q", speech_start=8.0, speech_end=10.0)
    assert turn.stages["tts"] == pytest.approx(0.08)


def test_turn_without_an_answer_is_an_error_not_a_number():
    events = [e for e in _turn_events() if e.kind != "audio"]
    turn = analyse_turn(events, "q", speech_start=8.0, speech_end=10.0)
    assert turn.voice_to_voice is None
    assert turn.error == "no bot audio after the question"


def test_turn_missing_a_stage_leaves_transport_unknown():
    events = [e for e in _turn_events() if e.kind != "bot-tts-started"]
    turn = analyse_turn(events, "q", speech_start=8.0, speech_end=10.0)
    assert turn.voice_to_voice == pytest.approx(1.0)
    assert turn.stages["phrase"] is None
    assert turn.stages["transport"] is None


def test_bot_speaking_before_the_caller_finished_is_flagged():
    events = [Event(9.0, "bot-started-speaking", None), *_turn_events()]
    turn = analyse_turn(events, "q", speech_start=8.0, speech_end=10.0)
    assert turn.early_response


def test_audio_stop_is_the_last_chunk_before_a_pause():
    chunks = [0.9, 1.0, 1.04, 1.08, 1.12, 2.5, 2.54]
    assert audio_stop_time(chunks, onset=1.0) == pytest.approx(1.12)
    # The next answer starting sooner than the gap still ends the old one.
    assert audio_stop_time([1.0, 1.04, 1.08, 1.2], 1.0, resumed_at=1.08) == pytest.approx(1.04)
    assert audio_stop_time([0.5, 0.6], onset=1.0) is None


def _barge_in_events(interruption_at: float | None) -> list[Event]:
    chunk_times = [4.8 + 0.04 * i for i in range(14)]  # bot audio until 5.32
    events = [Event(4.8, "bot-started-speaking", None)]
    events += [Event(t, "audio", LOUD) for t in chunk_times]
    if interruption_at is not None:
        events.append(Event(interruption_at, "interruption", None))
    events += [
        Event(6.0, "user-transcription", {"text": "stop please"}),
        Event(7.0, "audio", LOUD),  # the answer to the interruption
        Event(7.0, "bot-started-speaking", None),
    ]
    return sorted(events, key=lambda e: e.t)


def test_barge_in_measures_from_the_callers_onset_to_the_last_chunk():
    result = analyse_barge_in(_barge_in_events(interruption_at=5.34), speech_start=5.0)
    assert result.error is None
    assert result.stop_latency == pytest.approx(0.32)
    assert result.interruption_latency == pytest.approx(0.34)
    assert result.transcript == "stop please"


def test_a_stall_before_the_interruption_is_still_the_answer_playing():
    """A pause in the bot's audio that the interruption ends is not the bot stopping."""
    events = _barge_in_events(interruption_at=5.9)
    events.append(Event(5.8, "audio", LOUD))  # the answer goes on after a 0.48 s stall
    result = analyse_barge_in(sorted(events, key=lambda e: e.t), speech_start=5.0)
    assert result.stop_latency == pytest.approx(0.8)


def test_an_answer_that_ended_by_itself_is_not_a_barge_in():
    events = _barge_in_events(interruption_at=5.9)
    events.append(Event(5.33, "bot-stopped-speaking", None))
    result = analyse_barge_in(sorted(events, key=lambda e: e.t), speech_start=5.0)
    assert result.stop_latency is None
    assert result.error is not None and "ended by itself" in result.error


def test_barge_in_without_an_interruption_reports_when_the_answer_paused():
    result = analyse_barge_in(_barge_in_events(interruption_at=None), speech_start=5.0)
    assert result.error == "the server sent no interruption"
    assert result.stop_latency == pytest.approx(0.32)
    assert result.interruption_latency is None


def test_barge_in_while_the_bot_is_silent_is_not_measured():
    events = [
        Event(0.9, "bot-started-speaking", None),
        Event(1.0, "audio", LOUD),
        Event(1.1, "bot-stopped-speaking", None),
        Event(7.0, "audio", LOUD),
    ]
    result = analyse_barge_in(events, speech_start=5.0)
    assert result.stop_latency is None
    assert result.error is not None


def test_a_pause_inside_the_answer_still_counts_as_speaking():
    """The caller starts during a pause between two sentences; the bot then goes on."""
    events = _barge_in_events(interruption_at=6.0)
    events = [e for e in events if not (5.0 <= e.t < 5.5 and e.kind == "audio")]
    events.append(Event(5.6, "audio", LOUD))
    result = analyse_barge_in(sorted(events, key=lambda e: e.t), speech_start=5.2)
    assert result.error is None
    assert result.stop_latency == pytest.approx(0.4)


def test_speech_bounds_ignore_leading_and_trailing_silence():
    frame = 640  # bytes in 20 ms at 16 kHz
    pcm = QUIET[:frame] * 3 + LOUD[:frame] * 4 + QUIET[:frame] * 5
    assert speech_bounds(pcm) == (3, 6)
    with pytest.raises(ValueError):
        speech_bounds(QUIET * 3)
