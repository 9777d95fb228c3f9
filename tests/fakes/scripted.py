"""Scripted answers for the fakes: no local inference, so only the server's work is measured.

In scripted mode (`FakeDeepgram(scripted=True)`, `FakeCartesia(scripted=True)`) the fakes
load no model. They still speak the full wire protocol and still wait `latency_secs`, so a
benchmark can set each provider's latency exactly:

- Deepgram picks the transcript of an utterance by the length of its speech, measured with
  the fake's own energy endpointer: the registered phrase whose speech lasts closest to it
  (`phrase_secs` measures a clip the same way), else a fixed sentence.
- Cartesia answers with a cheap synthetic voice: a buzz with a syllable-rate envelope, as
  long as real speech of that text and audible from its first sample, so that "first audio"
  and "first audible audio" are the same moment.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

# Energy endpointing (the Deepgram fake uses the same numbers): 20 ms blocks at or above this
# RMS (int16) count as speech.
SPEECH_RMS = 300.0
BLOCK_SECS = 0.02
# What scripted Deepgram hears when no phrase is registered.
FALLBACK_TRANSCRIPT = "What is the capital of France?"
# Synthetic voice: about as fast as the Piper voice the default fake speaks with.
SECS_PER_CHAR = 0.065
MIN_SPEECH_SECS = 0.3
VOICE_PITCH_HZ = 120.0
SYLLABLES_PER_SEC = 4.0
VOICE_PEAK = 6000.0  # int16; its quietest 20 ms stays far above AUDIBLE_RMS


def block_levels(pcm: bytes, sample_rate: int) -> np.ndarray:
    """RMS of each whole 20 ms block of mono int16 PCM (a partial last block is dropped)."""
    block = int(sample_rate * BLOCK_SECS)
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float32)
    usable = len(samples) - len(samples) % block
    frames = samples[:usable].reshape(-1, block)
    return np.asarray(np.sqrt(np.mean(frames * frames, axis=1)))


def phrase_secs(pcm: bytes, sample_rate: int = 16_000) -> float:
    """Length of the speech in a clip as the fake's endpointer hears it: the first loud
    block's start to the last loud block's end (0.0 for a silent clip)."""
    loud = np.flatnonzero(block_levels(pcm, sample_rate) >= SPEECH_RMS)
    if loud.size == 0:
        return 0.0
    return float(loud[-1] - loud[0] + 1) * BLOCK_SECS


def nearest_phrase(speech_secs: float, phrases: Mapping[str, float]) -> str:
    """The registered phrase whose speech length is closest to `speech_secs`."""
    if not phrases:
        return FALLBACK_TRANSCRIPT
    return min(phrases, key=lambda text: abs(phrases[text] - speech_secs))


def words_so_far(text: str, heard_secs: float, total_secs: float) -> str:
    """An interim guess: the share of `text`'s words that `heard_secs` of speech covers."""
    words = text.split()
    share = 1.0 if total_secs <= 0 else min(1.0, heard_secs / total_secs)
    return " ".join(words[: math.ceil(len(words) * share)])


def speech_secs_for(text: str) -> float:
    return max(MIN_SPEECH_SECS, len(text.strip()) * SECS_PER_CHAR)


@functools.lru_cache(maxsize=512)
def synthetic_speech(text: str, sample_rate: int) -> bytes:
    """Deterministic speech-like int16 PCM for `text`: real length, audible throughout.

    Cached: a conversation repeats the same sentences, and the fake must cost almost nothing.
    """
    n = int(speech_secs_for(text) * sample_rate)
    t = np.arange(n, dtype=np.float32) / sample_rate
    buzz = sum(np.sin(2 * np.pi * VOICE_PITCH_HZ * k * t) / k for k in (1, 2, 3))
    envelope = 0.65 + 0.35 * np.cos(2 * np.pi * SYLLABLES_PER_SEC * t)
    audio = VOICE_PEAK * envelope * buzz / np.abs(buzz).max()
    return np.clip(np.rint(audio), -32768, 32767).astype("<i2").tobytes()
