"""EarlyTranscript: an early transcript is used only when nothing was said after it."""

from __future__ import annotations

import asyncio

from pipecat.audio.vad.vad_analyzer import VADState

from ai_operator.audio import EARLY_QUIET_FRAMES
from ai_operator.providers.early_stt import EarlyTranscript

FRAME = b"\x01\x00" * 320  # 20 ms of audio


class FakeWhisper:
    """Transcribes to the number of 20 ms frames it was given, and counts its runs."""

    def __init__(self) -> None:
        self.runs: list[int] = []

    async def __call__(self, audio: bytes) -> str:
        self.runs.append(len(audio) // len(FRAME))
        await asyncio.sleep(0)
        return f"{len(audio) // len(FRAME)} frames"


def feed(early: EarlyTranscript, buffer: bytearray, states: list[VADState]) -> None:
    for state in states:
        buffer += FRAME
        early.on_audio(buffer, state, speaking=True)


async def test_a_pause_starts_one_early_transcript_that_the_stop_uses():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper)
    feed(early, buffer, [VADState.SPEAKING] * 10)
    feed(early, buffer, [VADState.STOPPING] * (EARLY_QUIET_FRAMES - 1))
    assert whisper.runs == []  # one quiet window may be a dip inside a word
    feed(early, buffer, [VADState.STOPPING] * 5)  # on until the VAD's stop
    segment = bytes(buffer) + bytes(3200)  # the stop's segment, with trailing silence
    future = early.take(segment)
    assert future is not None
    assert await future == f"{10 + EARLY_QUIET_FRAMES} frames"
    assert whisper.runs == [10 + EARLY_QUIET_FRAMES]  # it ran once, on the words so far
    assert early.take(segment) is None  # used up


async def test_speech_after_the_early_start_throws_it_away():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper)
    feed(early, buffer, [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    feed(early, buffer, [VADState.SPEAKING] * 5)  # "... for two people tomorrow"
    assert early.take(bytes(buffer)) is None
    # The next pause starts another one, on all the words.
    feed(early, buffer, [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    future = early.take(bytes(buffer))
    assert future is not None and await future == f"{13 + EARLY_QUIET_FRAMES} frames"
    assert early.started == 2


async def test_no_early_transcript_outside_a_segment_or_for_other_audio():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper)
    for _ in range(10):  # STOPPING outside an open segment (before the VAD's start)
        buffer += FRAME
        early.on_audio(buffer, VADState.STOPPING, speaking=False)
    assert early.take(bytes(buffer)) is None and whisper.runs == []
    feed(early, buffer, [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    assert early.take(b"other audio") is None  # not the audio it heard
    await asyncio.sleep(0)


async def test_a_finished_early_transcript_is_announced_while_it_still_stands():
    whisper, buffer, heard = FakeWhisper(), bytearray(), []
    early = EarlyTranscript(whisper, on_ready=heard.append)
    feed(early, buffer, [VADState.SPEAKING] * 10 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    assert early.pending
    future = early.take(bytes(buffer))
    assert future is not None
    await future
    await asyncio.sleep(0)  # done callbacks run after the awaiting task resumes
    assert heard == []  # taken by the stop before it finished: the stop delivers it

    feed(early, buffer, [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    for _ in range(3):
        await asyncio.sleep(0)
    assert heard == [f"{15 + EARLY_QUIET_FRAMES * 2} frames"]


async def test_an_early_transcript_voided_by_speech_is_not_announced():
    whisper, buffer, heard = FakeWhisper(), bytearray(), []
    early = EarlyTranscript(whisper, on_ready=heard.append)
    feed(early, buffer, [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    feed(early, buffer, [VADState.SPEAKING])  # the user goes on before it finishes
    assert not early.pending
    for _ in range(3):
        await asyncio.sleep(0)
    assert heard == [] and whisper.runs == [5 + EARLY_QUIET_FRAMES]
