"""Whisper on the utterance's own window: the loop guards, and transcripts against the 30 s way."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ai_operator.providers.whisper_window import (
    collapse_runs,
    cut_phrase_loop,
    cut_restart,
    drop_repeated_sentences,
)


@pytest.mark.parametrize(
    ("looped", "kept"),
    [
        ("What is the capital of France? What is the capital", "What is the capital of France?"),
        ("who wrote Romeo and Juliet, who wrote Romeo and", "who wrote Romeo and Juliet,"),
        ("Right, right, right,", "Right,"),
        ("Where is it? Who wrote this? Who wrote", "Where is it? Who wrote this?"),
        ("Thank you. Thank you very much.", "Thank you. Thank you very much."),
        ("How do I boil an egg?", "How do I boil an egg?"),
        # A question that repeats its opening words without a pause mark is left alone.
        ("What is the time what is the date", "What is the time what is the date"),
    ],
)
def test_cut_restart(looped, kept):
    assert cut_restart(looped) == kept


@pytest.mark.parametrize(
    ("looped", "kept"),
    [
        ("Okay Okay Okay Okay Okay Okay", "Okay"),
        ("I see I see I see", "I see"),
        ("yes yes I know", "yes yes I know"),  # said twice is speech, not a loop
    ],
)
def test_collapse_runs(looped, kept):
    assert collapse_runs(looped) == kept


@pytest.mark.parametrize(
    ("looped", "kept"),
    [
        # Seen live (early transcription of "... John Smith and I live in Boston."):
        (
            "John Smith and I live in Boston John Smith and I live in Boston John Smith and",
            "John Smith and I live in Boston",
        ),
        ("book the table for two book the table for two", "book the table for two"),
        ("how do i boil an egg how do i boil", "how do i boil an egg"),  # seen live
        ("what is the time what is the date", "what is the time what is the date"),
        ("I said no I said", "I said no I said"),  # two words: too short to call a loop
        ("I live in Boston and I work in Boston too", "I live in Boston and I work in Boston too"),
        ("No no no, I said no", "No no no, I said no"),  # short repeats are collapse_runs' job
    ],
)
def test_cut_phrase_loop(looped, kept):
    assert cut_phrase_loop(looped) == kept


def test_drop_repeated_sentences():
    assert (
        drop_repeated_sentences("Where is it? How far away is the moon? How far away is the Moon?")
        == "Where is it? How far away is the moon?"
    )
    assert drop_repeated_sentences("Yes. No. Yes.") == "Yes. No. Yes."


_WORDS = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


@pytest.fixture(scope="module")
def windowed():
    from faster_whisper import WhisperModel

    from ai_operator.config import Settings
    from ai_operator.providers.local_models import WHISPER_NO_SPEECH_PROB, locate_whisper_model
    from ai_operator.providers.whisper_window import WindowedWhisper

    model = WhisperModel(
        str(locate_whisper_model(Settings(_env_file=None))),
        device="cpu",
        compute_type="int8",
        cpu_threads=2,
    )
    return WindowedWhisper(model, no_speech_threshold=WHISPER_NO_SPEECH_PROB)


QUESTIONS = (
    "What is the capital of France?",
    "How do I boil an egg?",
    "What should I cook for dinner tonight?",
    "Can you tell me the way to the train station?",
    "My name is John Smith and I live in Boston.",
    "What is the weather usually like in London? How do I boil an egg? Who wrote this?",
)


def test_the_utterance_window_hears_what_the_30_second_window_hears(windowed):
    from ai_operator.speech import synthesize_pcm16k

    differing = []
    for text in QUESTIONS:
        pcm = synthesize_pcm16k(text)
        samples = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
        fast = windowed.transcribe(samples)
        full = windowed.transcribe_full(samples)
        assert fast.path in ("window", "deduplicated")  # no fallback on clear speech
        if _words(fast.text) != _words(full.text):
            differing.append((text, fast.text, full.text))
    # Piper's voice varies a little between runs, and so do both transcripts: allow one.
    assert len(differing) <= 1, differing


def test_fast_long_speech_is_not_cut_short(windowed):
    """Faster than the first pass's budget: the decode goes on instead of stopping
    mid-sentence (it used to end at "... walk there from")."""
    from ai_operator.speech import synthesize_pcm16k

    text = (
        "Can you tell me the way to the train station and how long it takes to walk there "
        "from here?"
    )
    pcm = synthesize_pcm16k(text, pace=1.55)
    samples = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
    heard = _words(windowed.transcribe(samples).text)
    assert heard[-3:] == ["there", "from", "here"], heard


def test_the_decode_budget_stops_a_loop_without_a_second_pass(windowed, monkeypatch):
    """'What is the capital of France? What is the capital ...': the first pass sees the
    words start over, so one decode is enough."""
    from ai_operator.speech import synthesize_pcm16k

    samples = np.frombuffer(synthesize_pcm16k("What is the capital of France?"), np.int16)
    decodes = []
    real = windowed._decode
    monkeypatch.setattr(windowed, "_decode", lambda *a: decodes.append(a[2]) or real(*a))
    assert _words(windowed.transcribe(samples.astype(np.float32) / 32768.0).text) == _words(
        "What is the capital of France?"
    )
    assert len(decodes) == 1


def test_silence_gives_no_words(windowed):
    assert windowed.transcribe(np.zeros(16_000, np.float32)).text == ""
