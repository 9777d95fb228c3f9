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


async def transcript(
    texts: dict[int, str], unfinished: Callable[[str], bool] | None = None
) -> tuple[list[str], list[int]]:
    whisper = ScriptedWhisper(texts)
    models = SimpleNamespace(
        whisper_path=Path("tiny.en"),
        whisper=None,
        windowed_whisper=whisper,
        stt_executor=ThreadPoolExecutor(1),
    )
    stt = LocalWhisperSTTService(models=models)
    vad = SimpleNamespace(latest_state=VADState.STOPPING)
    stt.follow_vad(vad, unfinished=unfinished)
    early_audio = b"\x01\x00" * 16000  # a second of words, then the first quiet frame
    stt._early.on_audio(early_audio, VADState.STOPPING, speaking=True, frame_secs=0.02)
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
