"""Audio constants shared by the server, the tests and the benchmarks.

The web client captures and sends 16 kHz, 16-bit, mono PCM in 20 ms frames. The bot's voice
goes back at 24 kHz, Pipecat's default output rate: the official Pipecat clients ignore the
rate field of audio frames and play everything at 24 kHz, so any other rate would play at
the wrong speed there. Our own page reads the rate from each frame.
"""

from __future__ import annotations

import numpy as np

INPUT_SAMPLE_RATE = 16_000
OUTPUT_SAMPLE_RATE = 24_000
CHANNELS = 1
SAMPLE_WIDTH_BYTES = 2
FRAME_MS = 20
INPUT_FRAME_SAMPLES = INPUT_SAMPLE_RATE * FRAME_MS // 1000
INPUT_FRAME_BYTES = INPUT_FRAME_SAMPLES * SAMPLE_WIDTH_BYTES * CHANNELS
# Output audio is sent to the client in 80 ms chunks: 12.5 messages a second per call (each
# one a trip through the output transport, the serializer and the socket); on barge-in the
# client flushes what it holds, so the chunk's length does not delay the stop.
OUTPUT_CHUNK_MS = 80
# The playout model (floor.py: what the caller has heard, how loud the bot's echo may be)
# is kept in 40 ms steps: a chunk is accounted as two.
PLAYOUT_STEP_MS = 40

# Sample rates a client may declare in its audio frames; others are rejected with an error.
ACCEPTED_INPUT_RATES = frozenset({8_000, 16_000, 24_000, 44_100, 48_000})

# Quiet the VAD must hear (its STOPPING state) before Whisper and Smart Turn start on a
# pause early, ahead of its stop (`--early-quiet-secs`): the first quiet caller frame.
# Waiting longer skips more dips inside a word (a plosive's closure), each of which costs
# a discarded Whisper and Smart Turn pass, but starts every turn's transcript later: on a
# 2-vCPU EPYC, 3 frames (60 ms) committed questions 259-329 ms after the speech, 1 frame
# 254-298 ms, with 18 Whisper passes for 15 turns instead of 17.
EARLY_QUIET_SECS = 0.02

# Below this RMS (int16 units, ~-50 dBFS) a chunk counts as silence when judging audibility.
AUDIBLE_RMS = 100.0


def peak_int16(pcm: bytes) -> int:
    """Largest absolute sample of little-endian int16 PCM (0 for no samples)."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // SAMPLE_WIDTH_BYTES)
    # max/min rather than abs(): abs(-32768) overflows int16.
    return max(int(samples.max()), -int(samples.min())) if len(samples) else 0


def rms_int16(pcm: bytes) -> float:
    """Root-mean-square level of little-endian int16 PCM."""
    count = len(pcm) // SAMPLE_WIDTH_BYTES
    if not count:
        return 0.0
    # dot() rather than mean(x * x): no temporary array, ~3x faster on a 20 ms frame.
    samples = np.frombuffer(pcm, dtype="<i2", count=count).astype(np.float32)
    return float(np.sqrt(np.dot(samples, samples) / count))


# Piper opens every phrase with 30-60 ms of near-silence (samples below ONSET_PEAK, about
# -50 dBFS): at the start of a reply that is time the caller waits for nothing. The reply's
# first phrase is cut to start ONSET_KEEP_SECS before its first louder sample.
ONSET_PEAK = 100
ONSET_KEEP_SECS = 0.01


def trim_leading_silence(
    pcm: bytes, sample_rate: int, *, peak: int = ONSET_PEAK, keep_secs: float = ONSET_KEEP_SECS
) -> bytes:
    """Mono int16 `pcm` from `keep_secs` before its first sample louder than `peak`; all
    of it if it has none."""
    start = _onset(pcm, peak, round(keep_secs * sample_rate))
    return pcm if start is None else pcm[start * SAMPLE_WIDTH_BYTES :]


def _onset(pcm: bytes, peak: int, keep_samples: int) -> int | None:
    """The sample `keep_samples` before the first one louder than `peak` (0 at the
    earliest), or None if none is."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // SAMPLE_WIDTH_BYTES)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > peak)
    return max(0, int(loud[0]) - keep_samples) if len(loud) else None


class LeadingSilenceTrimmer:
    """`trim_leading_silence` for audio that comes in chunks (a phrase streamed from
    Piper): chunks with no sound yet are held back, all but their last `keep_secs`
    dropped, until the first sound; from then on chunks pass unchanged. Some phrases open
    with more near-silence than a first chunk holds ("Boiling ...": 0.39-0.43 s in five
    syntheses of eight, against a 0.37 s first chunk)."""

    def __init__(
        self, sample_rate: int, *, peak: int = ONSET_PEAK, keep_secs: float = ONSET_KEEP_SECS
    ) -> None:
        self._peak = peak
        self._keep_samples = round(keep_secs * sample_rate)
        self._held = b""
        self.sounded = False  # the first sound has passed

    def feed(self, pcm: bytes) -> bytes:
        """The part of `pcm` to play now: b"" while there is no sound yet."""
        if self.sounded:
            return pcm
        pcm = self._held + pcm
        start = _onset(pcm, self._peak, self._keep_samples)
        if start is None:
            keep = self._keep_samples * SAMPLE_WIDTH_BYTES
            self._held = pcm[-keep:] if keep else b""
            return b""
        self.sounded, self._held = True, b""
        return pcm[start * SAMPLE_WIDTH_BYTES :]

    def flush(self) -> bytes:
        """What is held back at the end of audio that never got loud (so a silent phrase
        still yields some audio)."""
        held, self._held = self._held, b""
        return held


def pcm_duration_secs(num_bytes: int, sample_rate: int, channels: int = 1) -> float:
    """Seconds of int16 audio held in `num_bytes`."""
    return num_bytes / (SAMPLE_WIDTH_BYTES * channels * sample_rate)
