"""Less per-frame work for the caller's audio on its way through the pipeline.

Clients send 20 ms frames: 50 a second per call, each of which hops through the
processors of the pipeline. In the capacity benchmark that per-frame work, more than any
model, is what fills the core. `AudioBatcher` passes the same audio on in `batch_ms`
chunks while the VAD hears nobody (most of a call: the caller listens), so everything after
it handles a fraction of those frames. The price is that the start of the caller's speech
reaches the VAD up to `batch_ms - 20` ms later; once speech may have started (the VAD is
no longer quiet) every frame passes at once, so the end of a turn is not delayed.
`CallerAudioStop` ends the audio where nothing downstream reads it.

Both run in Pipecat's direct mode: a frame is handled inside the push that delivers it,
not queued for a task of their own (two queue hops and two task switches a frame saved),
which is safe for quick work that never waits.
"""

from __future__ import annotations

import dataclasses

from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, InputAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ai_operator.turn_models import VADStateSource


class AudioBatcher(FrameProcessor):
    """Passes caller audio on in chunks of at least `batch_ms` while `vad` (the pipeline's)
    is quiet, frame by frame otherwise; other frames as they come. Without `vad` it always
    joins."""

    def __init__(
        self, *, batch_ms: int, vad: VADStateSource | None = None, **kwargs: object
    ) -> None:
        super().__init__(enable_direct_mode=True, **kwargs)  # type: ignore[arg-type]
        self._vad = vad
        self._batch_secs = batch_ms / 1000
        self._pending: list[InputAudioRawFrame] = []
        self._pending_bytes = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, InputAudioRawFrame):
            if self._vad is not None and self._vad.latest_state is not VADState.QUIET:
                self._pending.append(frame)  # speech may have started: nothing waits
                await self.push_frame(self._joined())
                return
            self._pending.append(frame)
            self._pending_bytes += len(frame.audio)
            bytes_per_sec = frame.sample_rate * frame.num_channels * 2
            if self._pending_bytes >= self._batch_secs * bytes_per_sec:
                await self.push_frame(self._joined())
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            self._pending, self._pending_bytes = [], 0
        await self.push_frame(frame, direction)

    def _joined(self) -> InputAudioRawFrame:
        frames, self._pending, self._pending_bytes = self._pending, [], 0
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
