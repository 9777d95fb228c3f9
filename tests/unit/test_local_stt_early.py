"""The local STT's use of an early transcript at the VAD's stop."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import TranscriptionFrame

from ai_operator.providers.local import LocalWhisperSTTService
from ai_operator.turns import sounds_unfinished


class ScriptedWhisper:
    """Transcribes to a text chosen by the audio's length, and records the lengths."""

    def __init__(self, texts: dict[int, str]) -> None:
        self.texts = texts
        self.runs: list[int] = []

    def transcribe(self, samples: np.ndarray) -> SimpleNamespace:
        self.runs.append(len(samples))
        return SimpleNamespace(text=self.texts[len(samples)], path="window")


class ListenedVAD:
    """The pipeline's VAD (barge_in.ObservedVAD) as the STT follows it: its listeners."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[VADState, float], None]] = []

    def add_listener(self, listener: Callable[[VADState, float], None]) -> None:
        self.listeners.append(listener)

    def judge(self, state: VADState, secs: float) -> None:
        for listener in self.listeners:
            listener(state, secs)


def following_vad(
    whisper: ScriptedWhisper, unfinished: Callable[[str], bool] | None = None
) -> tuple[LocalWhisperSTTService, ListenedVAD, SimpleNamespace]:
    """The STT on `whisper`, following a VAD; the models, to shut their executor down."""
    models = SimpleNamespace(
        whisper_path=Path("tiny.en"),
        whisper=None,
        windowed_whisper=whisper,
        stt_executor=ThreadPoolExecutor(1),
    )
    stt = LocalWhisperSTTService(models=models)
    vad = ListenedVAD()
    stt.follow_vad(vad, unfinished=unfinished)  # type: ignore[arg-type]
    return stt, vad, models


async def transcript(
    texts: dict[int, str], unfinished: Callable[[str], bool] | None = None
) -> tuple[list[str], list[int]]:
    whisper = ScriptedWhisper(texts)
    stt, vad, models = following_vad(whisper, unfinished)
    early_audio = b"\x01\x00" * 16000  # a second of words, then the first quiet frame
    stt._audio_buffer += early_audio
    stt._user_speaking = True
    vad.judge(VADState.STOPPING, 0.02)
    segment = early_audio + bytes(4800)  # the stop's segment: the quiet up to the stop
    frames = [f async for f in stt.run_stt(segment)]
    models.stt_executor.shutdown()
    return [f.text for f in frames if isinstance(f, TranscriptionFrame)], whisper.runs


async def test_the_stop_uses_the_early_transcript():
    texts, runs = await transcript({16000: "Who wrote Romeo and Juliet?"})
    assert texts == ["Who wrote Romeo and Juliet?"] and runs == [16000]


async def test_an_early_transcript_cut_short_is_done_again_on_the_whole_segment():
    texts, runs = await transcript(
        {16000: "Who wrote Romeo and Juliet,", 18400: "Who wrote Romeo and Juliet?"}
    )
    assert texts == ["Who wrote Romeo and Juliet?"] and runs == [16000, 18400]


async def test_an_early_transcript_that_sounds_unfinished_is_done_again():
    # The early pass missed the release of the last consonant ("an egg?" -> "an a?"), and
    # the turn would wait its longest for the rest of the sentence.
    texts, runs = await transcript(
        {16000: "How do I boil an a?", 18400: "How do I boil an egg?"}, sounds_unfinished
    )
    assert texts == ["How do I boil an egg?"] and runs == [16000, 18400]


async def test_an_early_transcript_that_sounds_finished_is_used():
    texts, runs = await transcript({16000: "How do I boil an egg?"}, sounds_unfinished)
    assert texts == ["How do I boil an egg?"] and runs == [16000]


async def test_the_vads_first_quiet_window_starts_the_early_pass_on_the_buffer_so_far():
    whisper = ScriptedWhisper({16000: "What time is it?"})
    stt, vad, models = following_vad(whisper)
    stt._user_speaking = True
    stt._audio_buffer += b"\x01\x00" * 16000
    vad.judge(VADState.SPEAKING, 0.02)
    assert stt._early is not None and not stt._early.pending
    vad.judge(VADState.STOPPING, 0.02)  # no frame of the STT's own in between
    assert stt._early.pending
    frames = [f async for f in stt.run_stt(bytes(stt._audio_buffer) + bytes(3200))]
    models.stt_executor.shutdown()
    assert [f.text for f in frames if isinstance(f, TranscriptionFrame)] == ["What time is it?"]
    assert whisper.runs == [16000]
