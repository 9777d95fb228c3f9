"""AudioBatcher: the caller's 20 ms frames reach the pipeline joined, with nothing lost;
CallerAudioStop: they go no further than needed; IdleAudioGate: silence nobody waits on is
held back."""

from __future__ import annotations

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import InputAudioRawFrame, TextFrame, UserAudioRawFrame
from pipecat.tests.utils import run_test

from ai_operator.audio_batch import AudioBatcher, CallerAudioStop, IdleAudioGate

FRAME_BYTES = 640  # 20 ms at 16 kHz, 16-bit mono


def frame(i: int) -> UserAudioRawFrame:
    return UserAudioRawFrame(
        audio=bytes([i]) * FRAME_BYTES, sample_rate=16_000, num_channels=1, user_id="caller"
    )


async def test_frames_are_joined_in_order_and_other_frames_pass():
    sent = [frame(i) for i in range(7)]
    down, _ = await run_test(
        AudioBatcher(batch_ms=60), frames_to_send=[*sent[:4], TextFrame("hi"), *sent[4:]]
    )
    audio = [f for f in down if isinstance(f, InputAudioRawFrame)]
    # 7 frames of 20 ms: two 60 ms chunks; the last 20 ms waits for more audio.
    assert [len(f.audio) for f in audio] == [3 * FRAME_BYTES, 3 * FRAME_BYTES]
    assert b"".join(f.audio for f in audio) == b"".join(f.audio for f in sent[:6])
    assert all(isinstance(f, UserAudioRawFrame) and f.user_id == "caller" for f in audio)
    assert audio[0].num_frames == 3 * 320
    assert any(isinstance(f, TextFrame) and f.text == "hi" for f in down)


async def test_frames_at_least_the_batch_size_pass_as_they_are():
    big = UserAudioRawFrame(audio=b"\0" * 4 * FRAME_BYTES, sample_rate=16_000, num_channels=1)
    down, _ = await run_test(AudioBatcher(batch_ms=60), frames_to_send=[big])
    assert [f for f in down if isinstance(f, InputAudioRawFrame)] == [big]


async def test_caller_audio_stops_and_everything_else_passes():
    down, _ = await run_test(
        CallerAudioStop(),
        frames_to_send=[frame(0), TextFrame("hi"), frame(1)],
        expected_down_frames=[TextFrame],
    )
    assert down[0].text == "hi"


class VADReadPerFrame:
    """The pipeline VAD's state, one scripted value per audio frame the batcher handles."""

    def __init__(self, states: list[VADState]) -> None:
        self._states = iter(states)
        self.params = VADParams()

    @property
    def latest_state(self) -> VADState:
        return next(self._states)


async def test_with_the_vad_only_quiet_audio_waits_to_be_joined():
    quiet, starting = VADState.QUIET, VADState.STARTING
    vad = VADReadPerFrame([quiet, quiet, starting, VADState.SPEAKING, quiet, quiet, quiet])
    sent = [frame(i) for i in range(7)]
    down, _ = await run_test(AudioBatcher(batch_ms=60, vad=vad), frames_to_send=sent)
    audio = [f for f in down if isinstance(f, InputAudioRawFrame)]
    # Two quiet frames wait; speech may start at the third, which takes them along at
    # once; the next passes alone; quiet again, three frames are joined.
    assert [len(f.audio) // FRAME_BYTES for f in audio] == [3, 1, 3]
    assert b"".join(f.audio for f in audio) == b"".join(f.audio for f in sent)


class WindowedVAD:
    """A VAD that judges `window` samples at a time at 16 kHz, in a fixed state."""

    def __init__(self, state: VADState, window: int = 512) -> None:
        self.latest_state = state
        self.params = VADParams()
        self.sample_rate = 16_000
        self._window = window

    def num_frames_required(self) -> int:
        return self._window


async def test_a_frame_waits_only_until_it_completes_a_vad_window():
    """Silero judges 512 samples (32 ms) at a time: a 20 ms frame that completes no window
    cannot change the VAD's state, so it goes on with the next frame. Every frame that does
    complete one is passed on at once, holding all audio up to it."""
    sent = [frame(i) for i in range(16)]
    down, _ = await run_test(
        AudioBatcher(vad=WindowedVAD(VADState.SPEAKING), windows=True), frames_to_send=sent
    )
    audio = [f for f in down if isinstance(f, InputAudioRawFrame)]
    assert [len(f.audio) // FRAME_BYTES for f in audio] == [2, 2, 1, 2, 1] * 2  # 5 per 8
    assert b"".join(f.audio for f in audio) == b"".join(f.audio for f in sent)
    # Pushed where the windows complete: after input frames 2, 4, 5, 7, 8 (320 samples each).
    passed, completed = 0, []
    for f in audio:
        passed += len(f.audio) // 2
        completed.append(passed // 512)
    windows_at_input = {(i * 320) // 512 for i in range(1, 17)}
    assert set(completed) == windows_at_input - {0}


async def test_window_joining_follows_the_vad_in_every_state_and_adds_to_quiet_batches():
    # Quiet, without batch_ms: the same whole windows.
    sent = [frame(i) for i in range(8)]
    down, _ = await run_test(
        AudioBatcher(vad=WindowedVAD(VADState.QUIET), windows=True), frames_to_send=sent
    )
    assert [len(f.audio) // FRAME_BYTES for f in down] == [2, 2, 1, 2, 1]
    # Quiet with batch_ms: the batches; the windows are counted across them.
    down, _ = await run_test(
        AudioBatcher(batch_ms=60, vad=WindowedVAD(VADState.QUIET), windows=True),
        frames_to_send=sent,
    )
    assert [len(f.audio) // FRAME_BYTES for f in down] == [3, 3]


async def test_audio_at_another_rate_than_the_vad_passes_at_once():
    narrow = [
        UserAudioRawFrame(audio=bytes(320), sample_rate=8_000, num_channels=1) for _ in range(3)
    ]
    down, _ = await run_test(
        AudioBatcher(vad=WindowedVAD(VADState.SPEAKING), windows=True), frames_to_send=narrow
    )
    assert len(down) == 3


# --- IdleAudioGate ------------------------------------------------------------------------

SILENCE_PEAK = 33.0  # -60 dBFS, the VAD's default silence level


def pcm_frame(peak: int) -> InputAudioRawFrame:
    """20 ms whose loudest sample is `peak` (negative: a negative sample)."""
    samples = np.zeros(FRAME_BYTES // 2, np.int16)
    samples[7] = peak
    return InputAudioRawFrame(audio=samples.tobytes(), sample_rate=16_000, num_channels=1)


class Idle:
    def __init__(self) -> None:
        self.value = True

    def __call__(self) -> bool:
        return self.value


def test_idle_gate_holds_silence_once_settled_and_only_while_idle():
    idle = Idle()
    gate = IdleAudioGate(silence_peak=SILENCE_PEAK, settle_secs=0.1, idle=idle)
    silent = pcm_frame(5)
    # 0.1 s of silence passes while the pipeline settles into it, then it is held back.
    assert [gate.admit(silent) for _ in range(8)] == [True] * 5 + [False] * 3
    assert gate.held == 3
    # A sound opens the gate at once; the silence after it settles again before any is held.
    assert gate.admit(pcm_frame(2000))
    assert [gate.admit(silent) for _ in range(6)] == [True] * 5 + [False]
    # While something waits on the caller's audio, all of it passes; once nothing does,
    # silence long settled is held back at once.
    idle.value = False
    assert all(gate.admit(silent) for _ in range(20))
    idle.value = True
    assert not gate.admit(silent)
    # Settling counts silence since the last sound, waited on or not.
    assert gate.admit(pcm_frame(-2000))
    idle.value = False
    assert all(gate.admit(silent) for _ in range(5))
    idle.value = True
    assert not gate.admit(silent) and gate.held == 6


def test_idle_gate_hears_one_loud_sample_of_either_sign():
    gate = IdleAudioGate(silence_peak=SILENCE_PEAK, settle_secs=0.0, idle=lambda: True)
    assert not gate.admit(pcm_frame(-32))
    assert gate.admit(pcm_frame(33)) and gate.admit(pcm_frame(-32768))
    assert not gate.admit(pcm_frame(0))
    assert gate.admit(InputAudioRawFrame(audio=b"", sample_rate=16_000, num_channels=1))
