"""Less per-frame work for the caller's audio on its way through the pipeline.

Clients send 20 ms frames: 50 a second per call, each of which hops through the
processors of the pipeline. In the capacity benchmark that per-frame work, more than any
model, is what fills the core. `AudioBatcher` passes the same audio on in fewer frames:

- **Whole VAD windows** (`windows`; on unless `--no-audio-vad-windows`): Silero judges 32 ms
  windows, so the VAD's state can change only with a frame that completes one. A frame
  that completes none waits and goes on with the next: 20 ms frames go on as 5 frames per
  8 (37.5 % fewer hops), and nothing that follows the VAD (the turn's start and end,
  barge-in, Smart Turn, the local STT's early Whisper) hears anything later than before.
  The batcher comes after the echo gate, which judges 20 ms at a time; a streaming STT
  (Deepgram) gets a held frame's audio 20 ms later, but never after a VAD decision that
  needs it.
- **Chunks of `batch_ms` while the VAD hears nobody** (opt-in, `--audio-batch-ms`): most
  of a call the caller listens; the price is that the start of their speech reaches the
  VAD up to `batch_ms - 20` ms later. Once speech may have started (the VAD is no longer
  quiet) only whole windows are waited for, so the end of a turn is not delayed.

`IdleAudioGate` holds back the caller's silence while nothing waits on it, before the
pipeline: see its docstring. `CallerAudioStop` ends the audio where nothing downstream
reads it.

The batcher and the stop run in Pipecat's direct mode: a frame is handled inside the push
that delivers it, not queued for a task of their own (two queue hops and two task switches
a frame saved), which is safe for quick work that never waits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ai_operator.audio import SAMPLE_WIDTH_BYTES, peak_int16
from ai_operator.turn_models import VADStateSource


class AudioBatcher(FrameProcessor):
    """Passes caller audio on, with `windows`, once it completes one of the analysis
    windows of `vad` (the pipeline's; counted from the start of the stream, as the VAD
    counts them); while `vad` is quiet, in chunks of at least `batch_ms`; other frames as
    they come. Without `vad`, `batch_ms` chunks always."""

    def __init__(
        self,
        *,
        batch_ms: int = 0,
        vad: VADStateSource | None = None,
        windows: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(enable_direct_mode=True, **kwargs)  # type: ignore[arg-type]
        self._vad = vad
        self._batch_secs = batch_ms / 1000
        self._windows = windows
        self._passed_bytes = 0  # audio passed on so far: where the VAD's windows fall
        self._pending: list[InputAudioRawFrame] = []
        self._pending_bytes = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, InputAudioRawFrame):
            self._pending.append(frame)
            self._pending_bytes += len(frame.audio)
            if self._ready(frame):
                await self.push_frame(self._joined())
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            self._pending, self._pending_bytes = [], 0
        await self.push_frame(frame, direction)

    def _ready(self, frame: InputAudioRawFrame) -> bool:
        quiet = self._vad is None or self._vad.latest_state is VADState.QUIET
        if self._batch_secs and quiet:
            bytes_per_sec = frame.sample_rate * frame.num_channels * SAMPLE_WIDTH_BYTES
            return self._pending_bytes >= self._batch_secs * bytes_per_sec
        vad = self._vad
        if not self._windows or vad is None or vad.sample_rate != frame.sample_rate:
            return True  # (the VAD learns its rate from the StartFrame, before any audio)
        window = vad.num_frames_required() * frame.num_channels * SAMPLE_WIDTH_BYTES
        return (self._passed_bytes + self._pending_bytes) // window > self._passed_bytes // window

    def _joined(self) -> InputAudioRawFrame:
        frames, self._pending = self._pending, []
        self._passed_bytes += self._pending_bytes
        self._pending_bytes = 0
        if len(frames) == 1:
            return frames[0]
        # The newest frame's type and fields (user id, transport source), all the audio.
        return dataclasses.replace(frames[-1], audio=b"".join(f.audio for f in frames))


class CallerAudioStop(FrameProcessor):
    """Stops the caller's audio where nothing further down the pipeline reads it.

    After the user aggregator (VAD, turn detection) the LLM, TTS, pacer, output transport
    and assistant aggregator only pass the caller's 20 ms frames along: six hops a frame,
    50 frames a second per call, for nothing. Not used when the call is recorded, since the
    recorder after the output transport takes the caller's audio from the stream.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(enable_direct_mode=True, **kwargs)  # type: ignore[arg-type]

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)


class IdleAudioGate:
    """Holds back the caller's silent frames while nothing in the pipeline waits on them.

    Most of a call the caller listens, and a browser's noise suppression (or a phone line)
    sends digital silence or close to it: 50 frames a second per call that each cost a
    trip through the transport, the VAD, the turn strategies and the streaming STT, and
    change nothing. A frame whose every sample is below `silence_peak` is held back
    (dropped) instead of passed on once `settle_secs` of such silence have passed on since
    the caller's last sound and `idle()` holds (the VAD hears quiet, no user turn or
    overlap is in progress: nothing that counts seconds of caller audio is counting). The
    next frame with a louder sample passes at once, so the start of speech reaches the VAD
    exactly when it would have. What downstream misses is silence it had already settled
    into: the VAD's volume block (400 ms) and Silero's state are those of quiet, Smart Turn
    pads its input with zeros anyway, and Deepgram's socket is kept open by Pipecat's
    keepalive (one every 5 s).

    `admit` is asked once per caller frame by the session's serializer, before Pipecat's
    input transport queues it.
    """

    def __init__(
        self, *, silence_peak: float, settle_secs: float, idle: Callable[[], bool]
    ) -> None:
        self._peak = silence_peak
        self._settle_secs = settle_secs
        self._idle = idle
        self._silent_secs = 0.0  # silence passed on since the caller's last sound
        self.held = 0  # frames held back so far (logs, tests)

    def admit(self, frame: InputAudioRawFrame) -> bool:
        """Whether to pass this caller frame on (False: it is silence nobody needs)."""
        if not frame.audio or peak_int16(frame.audio) >= self._peak:
            self._silent_secs = 0.0
            return True
        if self._silent_secs < self._settle_secs or not self._idle():
            self._silent_secs += frame.num_frames / frame.sample_rate
            return True
        self.held += 1
        return False


def through_gate(gate: IdleAudioGate | None, frame: Frame | None) -> Frame | None:
    """`frame` as a serializer hands it on: None if it is caller audio `gate` holds back."""
    if gate is not None and isinstance(frame, InputAudioRawFrame) and not gate.admit(frame):
        return None
    return frame
