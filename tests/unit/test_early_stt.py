"""EarlyTranscript: an early transcript is used only when nothing was said after it."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from pipecat.audio.vad.vad_analyzer import VADState

from ai_operator.audio import EARLY_QUIET_SECS
from ai_operator.providers.early_stt import EarlyTranscript, cut_short
from ai_operator.turns import sounds_unfinished

FRAME = b"\x01\x00" * 320  # 20 ms of audio
FRAME_SECS = 0.02
# The tests wait for three quiet frames, so that a shorter dip can be told apart.
EARLY_QUIET_FRAMES = 3
QUIET_SECS = EARLY_QUIET_FRAMES * FRAME_SECS


class FakeWhisper:
    """Whisper's one thread: a call queues a pass and returns its job, `work()` runs the
    queued ones as the thread would. A pass transcribes to `text`, or to the number of 20
    ms frames it was given; `runs` counts the passes that ran."""

    def __init__(self, text: str | None = None) -> None:
        self.text = text
        self.runs: list[int] = []
        self.queue: list[tuple[Future[str], bytes]] = []

    def __call__(self, audio: bytes) -> Future[str]:
        job: Future[str] = Future()
        self.queue.append((job, audio))
        return job

    def work(self) -> None:
        queue, self.queue = self.queue, []
        for job, audio in queue:
            if job.set_running_or_notify_cancel():  # False: cancelled while it waited
                self.runs.append(len(audio) // len(FRAME))
                job.set_result(self.text or f"{len(audio) // len(FRAME)} frames")


async def settle() -> None:
    """Let the loop hand a finished job's result to its awaiters and callbacks."""
    for _ in range(3):
        await asyncio.sleep(0)


def feed(early: EarlyTranscript, buffer: bytearray, states: list[VADState]) -> None:
    for state in states:
        buffer += FRAME
        early.on_audio(buffer, state, speaking=True, frame_secs=FRAME_SECS)


async def test_a_pause_starts_one_early_transcript_that_the_stop_uses():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper, quiet_secs=QUIET_SECS)
    feed(early, buffer, [VADState.SPEAKING] * 10)
    feed(early, buffer, [VADState.STOPPING] * (EARLY_QUIET_FRAMES - 1))
    assert whisper.runs == []  # one quiet window may be a dip inside a word
    feed(early, buffer, [VADState.STOPPING] * 5)  # on until the VAD's stop
    segment = bytes(buffer) + bytes(3200)  # the stop's segment, with trailing silence
    future = early.take(segment)
    assert future is not None
    whisper.work()
    assert await future == f"{10 + EARLY_QUIET_FRAMES} frames"
    assert whisper.runs == [10 + EARLY_QUIET_FRAMES]  # it ran once, on the words so far
    assert early.take(segment) is None  # used up


async def test_speech_after_the_early_start_throws_it_away():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper, quiet_secs=QUIET_SECS)
    feed(early, buffer, [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    feed(early, buffer, [VADState.SPEAKING] * 5)  # "... for two people tomorrow"
    assert early.take(bytes(buffer)) is None
    # The next pause starts another one, on all the words.
    feed(early, buffer, [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    future = early.take(bytes(buffer))
    whisper.work()
    assert future is not None and await future == f"{13 + EARLY_QUIET_FRAMES} frames"
    assert early.started == 2 and whisper.runs == [13 + EARLY_QUIET_FRAMES]


async def test_no_early_transcript_outside_a_segment_or_for_other_audio():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper, quiet_secs=QUIET_SECS)
    for _ in range(10):  # STOPPING outside an open segment (before the VAD's start)
        buffer += FRAME
        early.on_audio(buffer, VADState.STOPPING, speaking=False, frame_secs=FRAME_SECS)
    assert early.take(bytes(buffer)) is None and whisper.runs == []
    feed(early, buffer, [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    assert early.take(b"other audio") is None  # not the audio it heard
    await asyncio.sleep(0)


async def test_a_finished_early_transcript_is_announced_while_it_still_stands():
    whisper, buffer, heard = FakeWhisper(), bytearray(), []
    early = EarlyTranscript(whisper, quiet_secs=QUIET_SECS, on_ready=heard.append)
    feed(early, buffer, [VADState.SPEAKING] * 10 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    assert early.pending
    future = early.take(bytes(buffer))
    assert future is not None
    whisper.work()
    await future
    await settle()  # done callbacks run after the awaiting task resumes
    assert heard == []  # taken by the stop before it finished: the stop delivers it

    feed(early, buffer, [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    whisper.work()
    await settle()
    assert heard == [f"{15 + EARLY_QUIET_FRAMES * 2} frames"]


async def test_an_early_transcript_voided_by_speech_is_not_announced():
    whisper, buffer, heard = FakeWhisper(), bytearray(), []
    early = EarlyTranscript(whisper, quiet_secs=QUIET_SECS, on_ready=heard.append)
    feed(early, buffer, [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    feed(early, buffer, [VADState.SPEAKING])  # the user goes on before it finishes
    assert not early.pending
    whisper.work()
    await settle()
    assert heard == [] and whisper.runs == []  # cancelled before it ever ran


async def test_by_default_the_first_quiet_frame_starts_it_whatever_the_frame_length():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper)  # EARLY_QUIET_SECS: one 20 ms frame
    feed(early, buffer, [VADState.SPEAKING] * 10 + [VADState.STOPPING])
    assert early.pending and whisper.runs == [] and EARLY_QUIET_SECS == FRAME_SECS
    whisper.work()
    assert whisper.runs == [11]

    # A client sending 10 ms frames: the quiet is counted in seconds, not frames.
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper)
    for state in [VADState.SPEAKING, VADState.STOPPING, VADState.STOPPING]:
        buffer += FRAME[: len(FRAME) // 2]
        early.on_audio(buffer, state, speaking=True, frame_secs=FRAME_SECS / 2)
        assert early.pending == (state is VADState.STOPPING and len(buffer) == len(FRAME) * 3 // 2)
    assert early.started == 1 and len(whisper.queue) == 1


def test_an_early_transcript_ending_in_a_comma_may_be_cut_short():
    assert cut_short("Who wrote Romeo and Juliet,")
    assert cut_short("I'd like to book a table for -")
    assert not cut_short("Who wrote Romeo and Juliet?")
    assert not cut_short("who wrote Romeo and Juliet")
    assert not cut_short("")


async def test_an_early_transcript_cut_short_is_not_announced():
    heard: list[str] = []
    whisper = FakeWhisper("Who wrote Romeo and Juliet,")
    early = EarlyTranscript(whisper, quiet_secs=QUIET_SECS, on_ready=heard.append)
    feed(early, bytearray(), [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    whisper.work()
    await settle()
    assert whisper.runs and early.pending and heard == []


async def test_an_early_transcript_that_sounds_unfinished_is_doubted_and_not_announced():
    heard: list[str] = []
    whisper = FakeWhisper("How do I boil an a?")
    early = EarlyTranscript(
        whisper, quiet_secs=QUIET_SECS, on_ready=heard.append, unfinished=sounds_unfinished
    )
    assert early.doubtful("How do I boil an a?") and early.doubtful("Juliet,")
    assert not early.doubtful("How do I boil an egg?")
    assert not EarlyTranscript(whisper).doubtful("How do I boil an a?")  # no rule given
    feed(early, bytearray(), [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    whisper.work()
    await settle()
    assert whisper.runs and early.pending and heard == []


async def test_an_early_transcript_still_waiting_is_cancelled_when_the_user_goes_on():
    """On a busy server the early pass waits for Whisper's thread; once the user speaks
    again it is of no use, and it must not take the thread from passes that are. The job
    is cancelled at once, before the loop turns: a thread freed meanwhile would take it."""
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper, quiet_secs=QUIET_SECS)
    feed(early, buffer, [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    assert early.pending and len(whisper.queue) == 1  # queued behind other passes
    waiting, _ = whisper.queue[0]
    feed(early, buffer, [VADState.SPEAKING])  # the user goes on
    assert waiting.cancelled() and not early.pending  # no await in between
    whisper.work()  # the thread comes free
    assert whisper.runs == []

    # The same for a stop whose segment is not the one the early pass heard.
    feed(early, buffer, [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    waiting, _ = whisper.queue[0]
    assert early.take(b"other audio") is None and waiting.cancelled()


async def test_the_models_closed_mean_no_early_transcript():
    """At server stop the executor refuses new work; the VAD's next quiet frame must not
    fail the audio frame's processing."""

    def closed(audio: bytes) -> Future[str]:
        raise RuntimeError("cannot schedule new futures after shutdown")

    early = EarlyTranscript(closed, quiet_secs=QUIET_SECS)
    feed(early, bytearray(), [VADState.SPEAKING] * 5 + [VADState.STOPPING] * EARLY_QUIET_FRAMES)
    assert not early.pending and early.started == 0


# --- a pass started where the audio dips, before the VAD hears the pause -----------------

LOUD = b"\x00\x10" * 320  # 20 ms at 4096 (-18 dBFS): words
SILENT = bytes(640)  # 20 ms of digital silence
DIP_SECS = 2 * FRAME_SECS


def feed_audio(
    early: EarlyTranscript, buffer: bytearray, frames: list[tuple[bytes, VADState]]
) -> None:
    for frame, state in frames:
        buffer += frame
        early.on_audio(buffer, state, speaking=True, frame_secs=len(frame) / 32000)


async def test_a_dip_in_the_audio_starts_a_pass_before_the_vad_hears_the_pause():
    """Silero goes on calling the first silent windows after the last word speech; the pass
    starts on the audio's own silence, and the stop uses it."""
    whisper, buffer, heard = FakeWhisper(), bytearray(), []
    early = EarlyTranscript(whisper, dip_secs=DIP_SECS, on_ready=heard.append)
    feed_audio(early, buffer, [(LOUD, VADState.SPEAKING)] * 10 + [(SILENT, VADState.SPEAKING)])
    assert not early.pending  # 20 ms of silence: less than the dip asked for
    feed_audio(early, buffer, [(SILENT, VADState.SPEAKING)])
    assert early.pending and early.started == 1
    whisper.work()
    await settle()
    # Done while the VAD still says SPEAKING: held back until it hears the pause too.
    assert whisper.runs == [12] and heard == []
    feed_audio(early, buffer, [(SILENT, VADState.SPEAKING)])
    await settle()
    assert heard == []
    feed_audio(early, buffer, [(SILENT, VADState.STOPPING)])
    assert heard == ["12 frames"]
    feed_audio(early, buffer, [(SILENT, VADState.STOPPING)] * 6)
    assert early.started == 1  # the VAD's pause starts no second pass
    future = early.take(bytes(buffer))
    assert future is not None and await future == "12 frames"


async def test_audible_audio_after_a_dip_throws_its_pass_away():
    """A pause between words: the next word voids the pass, queued or done, and is never
    announced, even though the VAD never left SPEAKING."""
    whisper, buffer, heard = FakeWhisper(), bytearray(), []
    early = EarlyTranscript(whisper, dip_secs=DIP_SECS, on_ready=heard.append)
    feed_audio(early, buffer, [(LOUD, VADState.SPEAKING)] * 5 + [(SILENT, VADState.SPEAKING)] * 2)
    assert early.pending
    waiting, _ = whisper.queue[0]
    feed_audio(early, buffer, [(LOUD, VADState.SPEAKING)])
    assert not early.pending and waiting.cancelled()
    # A dip again; this pass runs and is done, then the words go on.
    feed_audio(early, buffer, [(SILENT, VADState.SPEAKING)] * 2)
    whisper.work()
    await settle()
    feed_audio(early, buffer, [(LOUD, VADState.SPEAKING)] * 3)
    feed_audio(early, buffer, [(SILENT, VADState.STOPPING)])
    assert heard == [] and whisper.runs == [10]
    assert early.started == 3  # the VAD's pause started a pass of its own, on every word
    whisper.work()
    await settle()
    assert heard == ["14 frames"]


async def test_the_vad_hearing_speech_again_voids_a_dip_pass_it_had_paused_on():
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper, dip_secs=DIP_SECS)
    feed_audio(early, buffer, [(LOUD, VADState.SPEAKING)] * 5 + [(SILENT, VADState.SPEAKING)] * 2)
    feed_audio(early, buffer, [(SILENT, VADState.STOPPING)] * 2)
    assert early.pending
    # Quiet audio, but Silero calls it speech (a soft word): the words go on.
    feed_audio(early, buffer, [(b"\x20\x00" * 320, VADState.SPEAKING)])
    assert not early.pending


async def test_a_frame_is_judged_by_its_silent_end_and_noise_never_dips():
    """A 60 ms buffer (the VAD's windows) whose words end in its first 20 ms counts 40 ms of
    dip; audio that never falls below the level (a noisy line) starts no dip pass."""
    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper, dip_secs=DIP_SECS)
    feed_audio(
        early, buffer, [(LOUD * 3, VADState.SPEAKING), (LOUD + SILENT * 2, VADState.SPEAKING)]
    )
    assert early.pending and early.started == 1

    whisper, buffer = FakeWhisper(), bytearray()
    early = EarlyTranscript(whisper, dip_secs=DIP_SECS)
    hiss = b"\x00\x01" * 320  # 256: -42 dBFS of line noise
    feed_audio(early, buffer, [(LOUD, VADState.SPEAKING)] * 5 + [(hiss, VADState.SPEAKING)] * 10)
    assert not early.pending
    feed_audio(early, buffer, [(hiss, VADState.STOPPING)])  # the VAD's pause, as before
    assert early.pending and early.started == 1
