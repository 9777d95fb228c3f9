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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future

from pipecat.audio.vad.vad_analyzer import VADState

from ai_operator.audio import EARLY_QUIET_SECS
from ai_operator.turn_models import cancel_job

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
    ) -> None:
        self._submit = submit
        self._quiet_secs = quiet_secs
        self._on_ready = on_ready
        self._unfinished = unfinished
        self._quiet = 0.0  # seconds of caller audio the VAD has called quiet, this pause
        # The audio an early transcription runs on, its job, and the job as awaited.
        self._pending: tuple[bytes, Future[str], asyncio.Future[str]] | None = None
        self.started = 0  # early transcriptions started, used or not (tests, logs)

    def on_audio(
        self, buffer: bytes | bytearray, state: VADState, *, speaking: bool, frame_secs: float
    ) -> None:
        """After each caller frame (`frame_secs` long): `buffer` is the segment so far,
        `state` the VAD's, `speaking` whether the segment is open (between the VAD's start
        and stop)."""
        if not speaking or state is not VADState.STOPPING:
            self._quiet = 0.0
            if speaking and state is VADState.SPEAKING:
                self._drop()  # the user goes on: those words are not the last
            return
        self._quiet += frame_secs
        if self._quiet >= self._quiet_secs - QUIET_TOLERANCE_SECS and self._pending is None:
            snapshot = bytes(buffer)
            try:
                job = self._submit(snapshot)
            except RuntimeError:  # the models are closed: the server is stopping
                return
            future = asyncio.wrap_future(job)
            future.add_done_callback(self._done)
            self._pending = (snapshot, job, future)
            self.started += 1

    @property
    def pending(self) -> bool:
        """An early transcription is running or done, and nothing said since voids it."""
        return self._pending is not None

    def _done(self, future: asyncio.Future[str]) -> None:
        text = _consume(future)
        current = self._pending is not None and self._pending[2] is future
        if text and current and not self.doubtful(text) and self._on_ready is not None:
            self._on_ready(text)

    def doubtful(self, text: str) -> bool:
        """Whether an early transcript should be done again on the whole segment: it
        sounds unfinished (`unfinished`, which should count a trailing comma or dash), or,
        without that rule, it may be cut short."""
        return (self._unfinished or cut_short)(text)

    def take(self, segment: bytes) -> asyncio.Future[str] | None:
        """The early transcription of `segment`, if one ran on its beginning and nothing
        was said after it; else None. Either way the early one is done with."""
        pending, self._pending = self._pending, None
        self._quiet = 0.0
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


def cut_short(text: str) -> bool:
    """Whether an early transcript may have been cut off: it ends in a comma or a dash."""
    return text.rstrip()[-1:] in {",", "-", "—"}


def _consume(future: asyncio.Future[str]) -> str:
    """The early transcript, or "" if it failed: a discarded one may fail, and nobody
    waits for it, so say nothing (the stop's own transcription reports a real failure)."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        return future.result()
    return ""
