"""A simulated listener for scripted calls: a loudspeaker and a microphone on a timeline.

`Loudspeaker` plays the bot's audio the way the web page does (a FIFO that starts after a
small jitter buffer and drops everything on an `interruption`), so a test can ask what
the user actually *heard* and when it stopped. `Microphone` mixes the user's scripted
speech with the loudspeaker's output fed back at a chosen level and delay (echo), and
`ScriptedCall` streams it to the server in real time while recording what comes back.

The integration tests and `bench/turn_taking.py` use these to assert and measure *when*
things happen: the bot's audio stopping after the user's speech onset, gaps in the bot's
speech during a backchannel, the bot answering during a mid-sentence pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ai_operator.audio import (
    AUDIBLE_RMS,
    FRAME_MS,
    INPUT_FRAME_BYTES,
    INPUT_SAMPLE_RATE,
    OUTPUT_SAMPLE_RATE,
)
from ai_operator.client import VoiceClient, audio_message
from ai_operator.speech import synthesize_pcm16k

# The web page's playback worklet waits this long before starting a burst (its jitter buffer).
PAGE_JITTER_SECS = 0.06
# Running dry for less than this before more audio arrives is an underrun (a glitch), not
# the end of a reply.
UNDERRUN_SECS = 0.5
# Playback gaps shorter than this are not silence (pauses inside and between words).
MIN_GAP_SECS = 0.12
# The first part of a hesitation is cut where its level falls below this (its fading tail
# goes with the pause).
HESITATION_CUT_RMS = AUDIBLE_RMS * 3
_FRAME_SECS = FRAME_MS / 1000
_FRAME_SAMPLES = INPUT_FRAME_BYTES // 2


def voiced_span(pcm: bytes, threshold: float = AUDIBLE_RMS) -> tuple[float, float]:
    """(onset, end) in seconds of the audible part of 16 kHz int16 `pcm`, by 20 ms frames.

    Audible is `make bench`'s rule for the end of a question (bench/questions.py): a frame
    whose RMS reaches AUDIBLE_RMS (-50 dBFS). A stricter level would count the release of
    a final consonant as silence: in "Tell me a joke." the /k/ bursts for ~10 ms at -40
    dBFS after a near-silent closure, and Whisper needs it to hear the word ("Read me a
    book." without it reads "... bought.").
    """
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
    n = len(samples) // _FRAME_SAMPLES
    frames = samples[: n * _FRAME_SAMPLES].reshape(n, _FRAME_SAMPLES)
    loud = np.flatnonzero(np.sqrt((frames * frames).mean(axis=1)) >= threshold)
    if len(loud) == 0:
        return 0.0, 0.0
    return float(loud[0] * _FRAME_SECS), float((loud[-1] + 1) * _FRAME_SECS)


def hesitation(
    before: str,
    after: str,
    pause_secs: float,
    synthesize: Callable[[str], bytes] = synthesize_pcm16k,
) -> tuple[bytes, bytes]:
    """(first part, pause + second part) of a sentence said with a hesitation.

    The first part is synthesised with a trailing comma, so it ends on the level,
    continuing pitch of a speaker who is not done; alone, Piper would end it like a
    finished statement, which no person pausing mid-sentence does.
    """
    first = synthesize(f"{before},")
    _, first_end = voiced_span(first, HESITATION_CUT_RMS)
    first = first[: int(first_end * INPUT_SAMPLE_RATE) * 2]
    silence = bytes(int(pause_secs * INPUT_SAMPLE_RATE) * 2)
    return first, silence + synthesize(after)


@dataclass
class _Played:
    start: float
    samples: np.ndarray  # int16

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / OUTPUT_SAMPLE_RATE


@dataclass
class Loudspeaker:
    """Plays received bot audio on a timeline (seconds on `time.monotonic`)."""

    jitter_secs: float = PAGE_JITTER_SECS
    chunks: list[_Played] = field(default_factory=list)
    flushes: list[float] = field(default_factory=list)
    max_buffered: float = 0.0  # most audio ever queued ahead of playback (s)
    underruns: int = 0

    @property
    def playhead(self) -> float:
        return self.chunks[-1].end if self.chunks else 0.0

    def play(self, t: float, pcm: bytes) -> None:
        if self.chunks and t - UNDERRUN_SECS < self.playhead <= t:
            self.underruns += 1  # ran dry in the middle of the bot's speech
        start = self.playhead if self.playhead > t else t + self.jitter_secs
        self.chunks.append(_Played(start, np.frombuffer(pcm, dtype="<i2").copy()))
        self.max_buffered = max(self.max_buffered, self.playhead - t)

    def flush(self, t: float) -> None:
        self.flushes.append(t)
        while self.chunks and self.chunks[-1].start >= t:
            self.chunks.pop()
        if self.chunks and self.chunks[-1].end > t:
            last = self.chunks[-1]
            keep = int((t - last.start) * OUTPUT_SAMPLE_RATE)
            self.chunks[-1] = _Played(last.start, last.samples[:keep])

    def render(self, t0: float, n: int) -> np.ndarray:
        """`n` samples of what played from `t0` on (silence where nothing played)."""
        out = np.zeros(n, dtype=np.float32)
        t1 = t0 + n / OUTPUT_SAMPLE_RATE
        for chunk in self.chunks:
            if chunk.end <= t0 or chunk.start >= t1:
                continue
            src0 = max(0, int(round((t0 - chunk.start) * OUTPUT_SAMPLE_RATE)))
            dst0 = max(0, int(round((chunk.start - t0) * OUTPUT_SAMPLE_RATE)))
            k = min(len(chunk.samples) - src0, n - dst0)
            if k > 0:
                out[dst0 : dst0 + k] += chunk.samples[src0 : src0 + k]
        return out

    def audible_runs(self, min_gap: float = MIN_GAP_SECS) -> list[tuple[float, float]]:
        """Spans of audible playback, merging pauses shorter than `min_gap`."""
        runs: list[tuple[float, float]] = []
        step = _FRAME_SAMPLES
        for chunk in self.chunks:
            for i in range(0, len(chunk.samples), step):
                part = chunk.samples[i : i + step].astype(np.float32)
                if len(part) == 0 or np.sqrt(np.mean(part * part)) < AUDIBLE_RMS:
                    continue
                s = chunk.start + i / OUTPUT_SAMPLE_RATE
                e = s + len(part) / OUTPUT_SAMPLE_RATE
                if runs and s - runs[-1][1] < min_gap:
                    runs[-1] = (runs[-1][0], max(runs[-1][1], e))
                else:
                    runs.append((s, e))
        return runs

    def audible_secs(self) -> float:
        return sum(e - s for s, e in self.audible_runs())


@dataclass
class _Said:
    future: asyncio.Future[tuple[float, float]]
    onset_sample: int
    end_sample: int
    onset_at: float | None = None


@dataclass
class Echo:
    """The loudspeaker leaking into the microphone: `gain_db` (e.g. -20) after `delay_secs`."""

    gain_db: float
    delay_secs: float


class ScriptedCall:
    """Streams a microphone (scripted speech + optional echo) and plays what comes back.

    Call `start()` once connected; `say(pcm)` queues speech (its future gives the onset
    and end times); `stop()` ends the stream. Audio and `interruption` frames are taken
    from the client's recording on every 20 ms tick, like a page's audio callback, and the
    microphone keeps streaming (silence, echo) between utterances, as a real one does.
    """

    def __init__(self, client: VoiceClient, *, echo: Echo | None = None) -> None:
        self.client = client
        self.speaker = Loudspeaker()
        self.echo = echo
        self._seen = 0
        self._queue: list[np.ndarray] = []
        self._task: asyncio.Task[None] | None = None
        self._said: list[_Said] = []
        self._sample = 0  # microphone samples sent so far
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def now(self) -> float:
        return time.monotonic()

    def say(self, pcm: bytes) -> asyncio.Future[tuple[float, float]]:
        """Queue `pcm` (16 kHz int16) after anything already queued; resolves, once fully
        sent, to the times (monotonic) the frames holding its speech onset and end left."""
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        onset, end = voiced_span(pcm)
        queued = sum(len(q) for q in self._queue)
        first = self._sample + queued
        self._said.append(
            _Said(
                asyncio.get_running_loop().create_future(),
                first + int(onset * INPUT_SAMPLE_RATE),
                first + int(end * INPUT_SAMPLE_RATE),
            )
        )
        self._queue.append(samples)
        return self._said[-1].future

    def _sync_speaker(self) -> None:
        events = self.client.recording.events
        for event in events[self._seen :]:
            if event.kind == "audio":
                self.speaker.play(event.t, event.data)
            elif event.kind == "interruption":
                self.speaker.flush(event.t)
        self._seen = len(events)

    def _next_frame(self, t: float) -> bytes:
        frame = np.zeros(_FRAME_SAMPLES, dtype=np.float32)
        filled = 0
        while filled < _FRAME_SAMPLES and self._queue:
            head = self._queue[0]
            k = min(len(head), _FRAME_SAMPLES - filled)
            frame[filled : filled + k] = head[:k]
            filled += k
            if k == len(head):
                self._queue.pop(0)
            else:
                self._queue[0] = head[k:]
        if self.echo is not None:
            gain = 10 ** (self.echo.gain_db / 20)
            frame += gain * self.speaker.render(t - self.echo.delay_secs, _FRAME_SAMPLES)
        return np.clip(np.rint(frame), -32768, 32767).astype("<i2").tobytes()

    def _note_sent(self, t: float) -> None:
        """The microphone frame ending at sample `self._sample` was sent at `t`."""
        for said in list(self._said):
            if said.onset_at is None and self._sample > said.onset_sample:
                said.onset_at = t
            if self._sample >= said.end_sample:
                self._said.remove(said)
                if not said.future.done():
                    said.future.set_result((said.onset_at or t, t))

    async def _run(self) -> None:
        i = 0
        while True:
            t = time.monotonic()
            self._sync_speaker()
            await self.client.send(audio_message(self._next_frame(t)))
            self._sample += _FRAME_SAMPLES
            self._note_sent(time.monotonic())
            i += 1
            delay = self._t0 + i * _FRAME_SECS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def wait_heard(self, secs: float) -> float:
        """Wait until `secs` of bot audio have played; returns the time that happened.

        Polls on the microphone's 20 ms tick; wrap it in `asyncio.timeout`.
        """
        while True:
            self._sync_speaker()
            now = time.monotonic()
            played = sum(
                max(0.0, min(e, now) - s) for s, e in self.speaker.audible_runs() if s < now
            )
            if played >= secs:
                return now
            await asyncio.sleep(_FRAME_SECS)

    def sync(self) -> None:
        self._sync_speaker()
