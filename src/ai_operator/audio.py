"""Audio constants shared by the server, the tests and the benchmarks.

The web client captures and sends 16 kHz, 16-bit, mono PCM in 20 ms frames; the server sends
the bot's voice back at 16 kHz as well, so both directions use one format.
"""

from __future__ import annotations

import numpy as np

INPUT_SAMPLE_RATE = 16_000
OUTPUT_SAMPLE_RATE = 16_000
CHANNELS = 1
SAMPLE_WIDTH_BYTES = 2
FRAME_MS = 20
INPUT_FRAME_SAMPLES = INPUT_SAMPLE_RATE * FRAME_MS // 1000
INPUT_FRAME_BYTES = INPUT_FRAME_SAMPLES * SAMPLE_WIDTH_BYTES * CHANNELS
# Output audio is sent to the client in 40 ms chunks: small enough to flush quickly on barge-in.
OUTPUT_CHUNK_MS = 40

# Sample rates a client may declare in its audio frames; others are rejected with an error.
ACCEPTED_INPUT_RATES = frozenset({8_000, 16_000, 24_000, 44_100, 48_000})

# Below this RMS (int16 units, ~-50 dBFS) a chunk counts as silence when judging audibility.
AUDIBLE_RMS = 100.0


def rms_int16(pcm: bytes) -> float:
    """Root-mean-square level of little-endian int16 PCM."""
    if len(pcm) < SAMPLE_WIDTH_BYTES:
        return 0.0
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
    return float(np.sqrt(np.mean(samples * samples)))


def pcm_duration_secs(num_bytes: int, sample_rate: int, channels: int = 1) -> float:
    """Seconds of int16 audio held in `num_bytes`."""
    return num_bytes / (SAMPLE_WIDTH_BYTES * channels * sample_rate)
