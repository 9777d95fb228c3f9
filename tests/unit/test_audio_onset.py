"""trim_leading_silence and LeadingSilenceTrimmer: a reply starts at its first sound."""

from __future__ import annotations

import numpy as np

from ai_operator.audio import ONSET_KEEP_SECS, LeadingSilenceTrimmer, trim_leading_silence

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


def chunks_of(audio: bytes, size: int) -> list[bytes]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def test_streamed_audio_is_trimmed_as_the_whole_would_be_however_long_the_lead_in():
    hush = np.full(9000, 40)  # 0.41 s of near-silence: longer than Piper's first chunk
    voice = (3000 * np.sin(np.arange(4000) / 5)).astype(np.int16)
    audio = pcm(hush, voice, hush[:500])
    for size in (8192, 2048, 18000, len(audio)):
        trimmer = LeadingSilenceTrimmer(RATE)
        out = [trimmer.feed(chunk) for chunk in chunks_of(audio, size)]
        assert b"".join(out) == trim_leading_silence(audio, RATE)
        assert trimmer.sounded and trimmer.flush() == b""
        first = next(i for i, o in enumerate(out) if o)
        assert all(o for o in out[first:])  # once it sounds, every chunk passes
        assert first == 9000 * 2 // size  # nothing before the chunk with the first sound


def test_streamed_audio_that_never_sounds_keeps_only_a_margin():
    trimmer = LeadingSilenceTrimmer(RATE)
    assert [trimmer.feed(c) for c in chunks_of(pcm(np.full(6000, 30)), 4000)] == [b""] * 3
    assert not trimmer.sounded
    assert len(trimmer.flush()) == round(ONSET_KEEP_SECS * RATE) * 2
    assert trimmer.flush() == b""
