"""Start transcribing a turn while the VAD is still confirming that it ended.

A segmented STT (Whisper) transcribes once the VAD reports the pause, `--vad-stop-secs`
after the last speech. By then the words have been in the buffer for that long: the VAD
says STOPPING from its first quiet window. `EarlyTranscript` starts the transcription
once it has said so for `quiet_secs` of caller audio, on the audio so far; when the VAD's
stop comes and no speech came in between, that transcript is the segment's (the audio
after it is quiet, and Whisper hears a second of silence after the words anyway), so it
arrives about one Whisper pass sooner. Speech resuming throws the early one away; the
next quiet starts another. A discarded early pass costs one Whisper run of CPU, and the
next early pass waits for it (one Whisper at a time).

An early transcript that ends in a comma is not trusted: Whisper marks words cut off
mid-flow that way, and the pause may have begun while the last word was still fading
(the VAD's first quiet window); the stop transcribes its whole segment instead, as the
comma would make the turn wait as unfinished anyway. The same goes for one whose last
word sounds unfinished (`unfinished`, given by the pipeline: "How do I boil an a?" for
"... an egg?", the final consonant's release still to come), which would otherwise hold
the turn for the longest wait: the whole segment's transcript costs one Whisper pass
inside that wait, and ends it if it reads as finished.

`submit` queues a transcription and returns its job, so that one the user talks on
after is cancelled at once: while it still waits for the thread (other conversations'
passes on a busy server) it never runs. Cancelling an asyncio wrapper instead would reach
the job a loop turn later, when a thread may have taken it.

`on_ready` hears an early transcript as soon as it is done, while it is still the one the
stop would use: the service reports it as an eager end of turn (Pipecat's
`EagerTranscriptionFrame`), so the LLM can start on it before the VAD's stop.

With `dip_secs`, a pass also starts where the caller's audio itself falls silent (every
20 ms of it below `dip_rms`, about -50 dBFS, for `dip_secs`), before the VAD says so:
Silero's confidence trails the end of the words by 70-160 ms (measured on the benchmark's
questions: it scores one or two all but silent 32 ms windows as speech after the last
word), and that lag was most of the time before a turn's transcript. Inside speech such
a dip is a pause between words or a stop consonant's closure; the next audible audio
throws the pass away, as the VAD's verdict of speech does for a pass started on its
pause, and one still waiting for the thread never runs. A pass so started is announced
once the VAD too has heard the pause (STOPPING), as one started on the VAD's pause is:
before that the words may only have paused. Noise above `dip_rms` (no noise
suppression, a noisy line) never dips, and the pass starts on the VAD's pause as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future

from pipecat.audio.vad.vad_analyzer import VADState

from ai_operator.audio import (
    AUDIBLE_RMS,
    EARLY_QUIET_SECS,
    FRAME_MS,
    INPUT_SAMPLE_RATE,
    SAMPLE_WIDTH_BYTES,
    rms_int16,
)
from ai_operator.turn_models import cancel_job

logger = logging.getLogger(__name__)

# Frame lengths add up with rounding errors: 0.02 s is still one 20 ms frame.
QUIET_TOLERANCE_SECS = 1e-6


class EarlyTranscript:
    """Watches the VAD per audio frame; hands over an early transcript when it still fits."""

    def __init__(
        self,
        submit: Callable[[bytes], Future[str]],
        *,
        quiet_secs: float = EARLY_QUIET_SECS,
        on_ready: Callable[[str], None] | None = None,
        unfinished: Callable[[str], bool] | None = None,
        dip_secs: float = 0.0,
        dip_rms: float = AUDIBLE_RMS,
        sample_rate: int = INPUT_SAMPLE_RATE,
    ) -> None:
        self._submit = submit
        self._quiet_secs = quiet_secs
        self._on_ready = on_ready
        self._unfinished = unfinished
        self._dip_secs = dip_secs  # 0: passes start on the VAD's pause only
        self._dip_rms = dip_rms
        self._bytes_per_sec = sample_rate * SAMPLE_WIDTH_BYTES
        self._step_bytes = self._bytes_per_sec * FRAME_MS // 1000  # the level's 20 ms
        self._quiet = 0.0  # seconds of caller audio the VAD has called quiet, this pause
        self._dip = 0.0  # seconds of caller audio below `dip_rms`, this dip
        # The audio an early transcription runs on, its job, and the job as awaited.
        self._pending: tuple[bytes, Future[str], asyncio.Future[str]] | None = None
        self._paused = False  # the VAD has called the pending pass's pause quiet
        self._ready: str | None = None  # its transcript, done before the VAD said so
        self.started = 0  # early transcriptions started, used or not (tests, logs)

    def on_audio(
        self, buffer: bytes | bytearray, state: VADState, *, speaking: bool, frame_secs: float
    ) -> None:
        """After each caller frame (`frame_secs` long, at the end of `buffer`): `buffer` is
        the segment so far, `state` the VAD's, `speaking` whether the segment is open
        (between the VAD's start and stop)."""
        if not speaking:
            self._quiet = self._dip = 0.0
            return
        if state is VADState.STOPPING:
            self._quiet += frame_secs
            self._dip = 0.0
            if self._pending is not None:
                self._paused = True
                ready, self._ready = self._ready, None
                if ready is not None and self._on_ready is not None:
                    self._on_ready(ready)
            elif self._quiet >= self._quiet_secs - QUIET_TOLERANCE_SECS:
                self._start(buffer, paused=True)
            return
        self._quiet = 0.0
        if state is not VADState.SPEAKING:
            return
        if self._dip_secs <= 0:
            self._drop()  # the user goes on: those words are not the last
            return
        quiet = self._trailing_quiet_secs(buffer, frame_secs)
        if quiet < frame_secs - QUIET_TOLERANCE_SECS or self._paused:
            # Audible words since the pass's audio, or the VAD hearing speech again.
            self._drop()
        self._dip = self._dip + quiet if quiet >= frame_secs - QUIET_TOLERANCE_SECS else quiet
        if self._pending is None and self._dip >= self._dip_secs - QUIET_TOLERANCE_SECS:
            self._start(buffer, paused=False)

    def _trailing_quiet_secs(self, buffer: bytes | bytearray, frame_secs: float) -> float:
        """How much of the frame at the end of `buffer` is quiet (below `dip_rms`) up to
        its end, judged 20 ms at a time."""
        frame = round(frame_secs * self._bytes_per_sec)
        frame -= frame % SAMPLE_WIDTH_BYTES
        end = len(buffer)
        start = max(0, end - frame)
        quiet = 0
        while end > start:
            step = max(start, end - self._step_bytes)
            if rms_int16(bytes(buffer[step:end])) >= self._dip_rms:
                break
            quiet += end - step
            end = step
        return frame_secs * quiet / frame if frame else 0.0

    def _start(self, buffer: bytes | bytearray, *, paused: bool) -> None:
        snapshot = bytes(buffer)
        try:
            job = self._submit(snapshot)
        except RuntimeError:  # the models are closed: the server is stopping
            return
        future = asyncio.wrap_future(job)
        future.add_done_callback(self._done)
        self._pending = (snapshot, job, future)
        self._paused = paused
        self._ready = None
        self.started += 1
        logger.debug(
            "early transcription of %.2f s of audio, on %s",
            len(snapshot) / self._bytes_per_sec,
            "the VAD's pause" if paused else "a dip in the audio",
        )

    @property
    def pending(self) -> bool:
        """An early transcription is running or done, and nothing said since voids it."""
        return self._pending is not None

    def _done(self, future: asyncio.Future[str]) -> None:
        text = _consume(future)
        current = self._pending is not None and self._pending[2] is future
        if not (text and current) or self.doubtful(text) or self._on_ready is None:
            return
        if self._paused:
            self._on_ready(text)
        else:  # the VAD has not heard the pause yet: announced when it does
            self._ready = text

    def doubtful(self, text: str) -> bool:
        """Whether an early transcript should be done again on the whole segment: it
        sounds unfinished (`unfinished`, which should count a trailing comma or dash), or,
        without that rule, it may be cut short."""
        return (self._unfinished or cut_short)(text)

    def take(self, segment: bytes) -> asyncio.Future[str] | None:
        """The early transcription of `segment`, if one ran on its beginning and nothing
        was said after it; else None. Either way the early one is done with."""
        pending, self._pending = self._pending, None
        self._quiet = self._dip = 0.0
        self._paused, self._ready = False, None
        if pending is None:
            return None
        snapshot, job, future = pending
        if segment.startswith(snapshot):
            return future
        cancel_job(job, future)
        return None

    def _drop(self) -> None:
        """Forget the early transcription; one still waiting for Whisper (queued behind
        other conversations' passes on a busy server) never runs."""
        if self._pending is not None:
            cancel_job(*self._pending[1:])
        self._pending = None
        self._paused, self._ready = False, None


def cut_short(text: str) -> bool:
    """Whether an early transcript may have been cut off: it ends in a comma or a dash."""
    return text.rstrip()[-1:] in {",", "-", "—"}


def _consume(future: asyncio.Future[str]) -> str:
    """The early transcript, or "" if it failed: a discarded one may fail, and nobody
    waits for it, so say nothing (the stop's own transcription reports a real failure)."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        return future.result()
    return ""
