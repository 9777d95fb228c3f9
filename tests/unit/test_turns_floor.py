"""The bot's floor, one processor at a time: paced playback, echo gate, heard-text context.

Scripted timelines: frames go in at known times (Pipecat's `SleepFrame`) and the tests
assert what was released when, and what the assistant context holds afterwards.
"""

from __future__ import annotations

import asyncio
import math
import time

import numpy as np
import pytest
from pipecat.frames.frames import (
    AggregatedTextFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.utils.text.base_text_aggregator import TextType

from ai_operator.audio import OUTPUT_CHUNK_MS, OUTPUT_SAMPLE_RATE, PLAYOUT_STEP_MS, rms_int16
from ai_operator.floor import BotFloor, EchoGate, HeardTextFilter, OutputPacer
from ai_operator.turns import INTERRUPTED_MARK

LEAD = 0.1


def make_floor(**overrides: object) -> BotFloor:
    """A floor with the settings' default thresholds."""
    params: dict = dict(lead_secs=LEAD, grace_secs=0.3, recent_words=80, secs_per_char=0.075)
    return BotFloor(**{**params, **overrides})


def tone(secs: float, amplitude: int = 3000) -> bytes:
    n = int(secs * OUTPUT_SAMPLE_RATE)
    t = np.arange(n) / OUTPUT_SAMPLE_RATE
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


def sentence(ctx: str, text: str, secs: float) -> list[Frame]:
    """What Piper's TTS service emits for one sentence, in order."""
    announce = AggregatedTextFrame(text, TextType.SENTENCE)
    announce.will_be_spoken = True
    announce.append_to_context = False
    announce.context_id = ctx
    spoken = TTSTextFrame(text, TextType.SENTENCE)
    spoken.context_id = ctx
    return [announce, TTSAudioRawFrame(tone(secs), OUTPUT_SAMPLE_RATE, 1, context_id=ctx), spoken]


def reply(ctx: str, *sentences: tuple[str, float]) -> list[Frame]:
    frames: list[Frame] = [LLMFullResponseStartFrame(), TTSStartedFrame(context_id=ctx)]
    for text, secs in sentences:
        frames += sentence(ctx, text, secs)
    return [*frames, TTSStoppedFrame(context_id=ctx), LLMFullResponseEndFrame()]


class ArrivalLog(FrameProcessor):
    """Records when each downstream frame arrives (seconds on time.monotonic)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.arrivals.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)


async def test_pacer_releases_audio_in_real_time_with_a_small_lead():
    floor = make_floor()
    log = ArrivalLog()
    await run_test(
        Pipeline([OutputPacer(floor), log]),
        frames_to_send=reply("c1", ("One second of speech.", 1.0)),
    )
    audio = [t for t, f in log.arrivals if isinstance(f, TTSAudioRawFrame)]
    assert len(audio) == math.ceil(1000 / OUTPUT_CHUNK_MS)
    # Not all at once (Pipecat's WebSocket output alone sends at twice real time): the last
    # chunk leaves about its own start time minus the lead after the first.
    assert 1.0 - LEAD - 0.1 <= audio[-1] - audio[0] <= 1.5
    kinds = [type(f).__name__ for _, f in log.arrivals]
    assert kinds.index("TTSTextFrame") > kinds.index("TTSAudioRawFrame")  # order kept


async def test_the_playout_model_hears_each_step_of_a_chunk():
    """A chunk is sent whole but accounted in 40 ms steps: a loud step next to a silent one
    reads as loud as it is, not as their average (the echo gate's reference level)."""
    floor = make_floor()
    step = tone(PLAYOUT_STEP_MS / 1000)
    audio = step + bytes(len(step)) * (OUTPUT_CHUNK_MS // PLAYOUT_STEP_MS - 1)
    frames = reply("c1", ("Loud, then quiet.", 0.0))
    frames[3] = TTSAudioRawFrame(audio, OUTPUT_SAMPLE_RATE, 1, context_id="c1")
    log = ArrivalLog()
    await run_test(Pipeline([OutputPacer(floor), log]), frames_to_send=frames)
    assert [len(f.audio) for _, f in log.arrivals if isinstance(f, TTSAudioRawFrame)] == [
        len(audio)
    ]
    assert floor.playout.level(-math.inf, math.inf) == pytest.approx(rms_int16(step))


class PauseAtChunk(FrameProcessor):
    """Pauses the floor when the `n`th audio chunk passes, and resumes it `hold` s later."""

    def __init__(self, floor: BotFloor, n: int, hold: float) -> None:
        super().__init__()
        self._floor, self._n, self._hold = floor, n, hold
        self.resume_task: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self._n -= 1
            if self._n == 0:
                self._floor.pause()
                self.resume_task = asyncio.create_task(self._resume_later())
        await self.push_frame(frame, direction)

    async def _resume_later(self) -> None:
        await asyncio.sleep(self._hold)
        self._floor.resume()


async def test_paused_floor_holds_audio_until_resumed():
    floor = make_floor()
    pauser = PauseAtChunk(floor, n=5, hold=0.6)
    log = ArrivalLog()
    await run_test(
        Pipeline([OutputPacer(floor), pauser, log]),
        frames_to_send=reply("c1", ("One second of speech.", 1.0)),
    )
    assert pauser.resume_task is not None
    await pauser.resume_task
    times = [t for t, f in log.arrivals if isinstance(f, TTSAudioRawFrame)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps.index(max(gaps)) == 4  # right after the 5th chunk...
    assert max(gaps) >= 0.6 - 0.05  # ...nothing was released while paused
    assert len(times) == math.ceil(1000 / OUTPUT_CHUNK_MS)  # nothing lost: it went on


async def test_echo_gate_silences_only_input_quieter_than_the_bot():
    floor = make_floor()
    gate = EchoGate(floor, margin_db=10, tail_secs=0.5, hangover_secs=0.3)
    floor.playout.release(5.0, 3000.0, floor.now())  # the bot is talking
    echo = InputAudioRawFrame(tone(0.02, amplitude=400), 16000, 1)  # ~ -20 dB
    voice = InputAudioRawFrame(tone(0.02, amplitude=3000), 16000, 1)
    down, _ = await run_test(gate, frames_to_send=[echo, voice])
    audio = [f.audio for f in down if isinstance(f, InputAudioRawFrame)]
    assert audio[0] == bytes(len(audio[0]))  # the echo never reaches the VAD
    assert audio[1] == voice.audio
    assert gate.gated_frames == 1


async def test_echo_gate_stays_open_for_the_hangover_after_the_user_is_loud():
    """Quieter syllables right after the user's loud ones are speech, not echo."""
    voice = InputAudioRawFrame(tone(0.02, amplitude=3000), 16000, 1)
    for hangover, passes in ((0.3, True), (0.0, False)):
        floor = make_floor()
        gate = EchoGate(floor, margin_db=10, tail_secs=0.5, hangover_secs=hangover)
        floor.playout.release(5.0, 3000.0, floor.now())
        syllable = tone(0.02, amplitude=400)  # as quiet as the echo
        quiet = InputAudioRawFrame(syllable, 16000, 1)
        down, _ = await run_test(gate, frames_to_send=[voice, quiet])
        audio = [f.audio for f in down if isinstance(f, InputAudioRawFrame)]
        assert (audio[1] == syllable) is passes, f"hangover {hangover}"


def test_floor_is_held_for_the_grace_after_the_audio_ends():
    for grace, held in ((0.3, True), (0.1, False)):
        floor = make_floor(grace_secs=grace, clock=lambda: 10.0)
        floor.playout.release(1.0, 3000.0, now=8.8)  # played until 9.8
        assert floor.holds_floor(now=10.0) is held


def test_floor_sizes_unfinished_sentences_at_the_speaking_rate():
    floor = make_floor(secs_per_char=0.1)
    floor.on_text_announced("c", "Ten chars.")
    floor.on_audio_queued("c", 0.2)
    assert floor.reply is not None
    assert floor.reply.segments[0].expected_secs == 1.0


def test_floor_remembers_only_the_recent_words():
    floor = make_floor(recent_words=3)
    floor.on_text_announced("a", "one two three four")
    floor.on_text_announced("b", "five")
    assert floor.recent_text() == "three four five"


async def interrupted_context(frames: list[Frame]) -> list[dict]:
    floor = make_floor()
    context = LLMContext()
    context.add_message({"role": "user", "content": "Tell me about Paris."})
    pair = LLMContextAggregatorPair(context)
    await run_test(
        Pipeline([OutputPacer(floor), HeardTextFilter(floor, context), pair.assistant()]),
        frames_to_send=frames,
    )
    return [m for m in context.messages if m["role"] == "assistant"]  # type: ignore[index]


FIRST = "Paris is the capital of France."
SECOND = "It has many famous museums and lovely parks."


async def test_context_keeps_only_what_was_heard_and_marks_the_cut():
    frames = reply("c1", (FIRST, 1.0), (SECOND, 1.0))
    # Interrupt ~0.5 s into the second sentence.
    messages = await interrupted_context([*frames, SleepFrame(1.5), InterruptionFrame()])
    assert len(messages) == 1
    content = messages[0]["content"]
    assert content.startswith(FIRST + " It")
    assert content.endswith(INTERRUPTED_MARK)
    heard_words = len(content.removeprefix(FIRST).removesuffix(INTERRUPTED_MARK).split())
    assert 2 <= heard_words <= 7  # about half of the 8 words (timing varies), never all


async def test_uninterrupted_reply_reaches_the_context_whole():
    messages = await interrupted_context(reply("c1", (FIRST, 0.3), (SECOND, 0.3)))
    assert [m["content"] for m in messages] == [f"{FIRST} {SECOND}"]


async def test_interruption_before_any_audio_played_writes_nothing():
    frames = reply("c1", (FIRST, 1.0))
    messages = await interrupted_context([frames[0], InterruptionFrame(), *frames[1:2]])
    assert messages == []


async def test_stale_text_after_an_interruption_does_not_leak_into_the_next_reply():
    """The interruption overtakes a spoken-text frame already pushed by the transport."""
    first = reply("c1", (FIRST, 0.5), (SECOND, 1.0))
    late = sentence("c1", SECOND, 0.01)[-1]  # TTSTextFrame of c1 arriving after the cut
    second = reply("c2", ("Sure, go ahead.", 0.3))
    messages = await interrupted_context(
        [*first, SleepFrame(0.9), InterruptionFrame(), late, SleepFrame(0.1), *second]
    )
    contents = [m["content"] for m in messages]
    assert len(contents) == 2
    assert contents[0].startswith(FIRST) and contents[0].endswith(INTERRUPTED_MARK)
    assert SECOND not in contents[0]
    assert contents[1] == "Sure, go ahead."
