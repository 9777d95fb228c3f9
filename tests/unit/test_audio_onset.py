"""trim_leading_silence: a reply starts at its first sound."""

from __future__ import annotations

import numpy as np

from ai_operator.audio import ONSET_KEEP_SECS, trim_leading_silence

RATE = 22_050


def pcm(*parts: np.ndarray) -> bytes:
    return np.concatenate(parts).astype("<i2").tobytes()


def test_the_lead_in_is_cut_to_a_short_margin_before_the_first_sound():
    hush = np.full(1000, 40)  # ~45 ms of near-silence, below the onset peak
    voice = (3000 * np.sin(np.arange(2000) / 5)).astype(np.int16)
    audio = pcm(hush, voice)
    trimmed = trim_leading_silence(audio, RATE)
    kept = round(ONSET_KEEP_SECS * RATE)
    first_loud = int(np.flatnonzero(np.abs(voice) > 100)[0])
    assert len(audio) - len(trimmed) == (1000 + first_loud - kept) * 2
    assert audio.endswith(trimmed)  # a cut, nothing else changed


def test_audio_that_starts_loud_or_never_gets_loud_is_left_alone():
    loud = pcm(np.full(500, 2000))
    assert trim_leading_silence(loud, RATE) == loud
    quiet = pcm(np.full(500, 50))
    assert trim_leading_silence(quiet, RATE) == quiet
    assert trim_leading_silence(b"", RATE) == b""


def test_piper_phrases_lose_their_lead_in():
    from ai_operator.speech import synthesize_pcm16k

    audio = synthesize_pcm16k("Of course!")
    trimmed = trim_leading_silence(audio, 16_000)
    cut_secs = (len(audio) - len(trimmed)) / 2 / 16_000
    assert cut_secs > 0.01  # Piper opens with tens of milliseconds of near-silence
    lead = np.flatnonzero(np.abs(np.frombuffer(trimmed, "<i2").astype(np.int32)) > 100)[0]
    assert lead == round(ONSET_KEEP_SECS * 16_000)
