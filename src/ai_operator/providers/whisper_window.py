"""Whisper on the utterance alone instead of a 30-second window.

Whisper's encoder is trained on 30 s windows, and faster-whisper pads every clip to one.
For a 2 s question, ~90 % of the encoder's work goes into silence: 190 ms of 300 ms on
2 cores with tiny.en. CTranslate2 accepts a shorter window, and encoding only the clip
plus `PAD_SECS` of silence costs 10-25 ms.

The catch: with the window ending just after the speech, Whisper sometimes does not
emit end-of-text and repeats the transcript until it runs out of tokens ("Yeah. Yeah.
Yeah. ..."), often stopping mid-copy ("What is the capital of France? What is the
capital"). Three guards keep the result as good as the full window's:
- the transcript is cut where it starts over with its own first words after a
  punctuation mark, and a sentence repeated back to back is kept once;
- the decode runs in two steps: first for `FIRST_PASS_TOKENS_PER_SEC` tokens per second
  of audio (a little above speech rates), which is usually enough to see the words end or
  start over; only if they do neither does it go on, up to `MAX_TOKENS_PER_SEC`. Since a
  loop runs until the budget, the budget is what a looping decode costs;
- a decode that fills even the larger budget without a loop showing is done again the
  standard way (30 s window): the speech was faster or longer than the budget allows.

Measured on the 31 benchmark and turn-taking clips (2 vCPU, 2 threads): 62 ms median per
clip against 310 ms, with the same words as the 30 s window on every question
(`tests/unit/test_whisper_window.py` checks transcripts against the full window).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

SAMPLE_RATE = 16_000
# Silence after the speech inside the window; Whisper needs some to see the speech end.
PAD_SECS = 1.0
# Longer clips take the standard path (the window cannot exceed 30 s anyway).
MAX_WINDOW_SECS = 25.0
# Token budgets for the decode: conversational speech runs at 3-5 tokens/s.
FIRST_PASS_TOKENS_PER_SEC = 5.0
MAX_TOKENS_PER_SEC = 10.0
MIN_TOKENS = 3
# Up to this many words repeated at least `MIN_RUN_COPIES` times in a row are a loop.
MAX_RUN_WORDS = 4
MIN_RUN_COPIES = 3
# A phrase this long said twice in a row is a loop, punctuated or not; so is an utterance
# whose last words (at least MIN_RESTART_WORDS) repeat its first ones.
MIN_LOOP_WORDS = 5
MIN_RESTART_WORDS = 3

_SENTENCE = re.compile(r"[^.?!]+[.?!]*")
_WORDS = re.compile(r"[a-z0-9']+")
# A word and the pause mark right after it, if any.
_WORD_SPANS = re.compile(r"([A-Za-z0-9']+)([.?!,]?)")


@dataclass(frozen=True)
class Transcript:
    text: str
    no_speech_prob: float
    path: str  # "window" (fast path), "deduplicated" or "full" (fell back)


class WindowedWhisper:
    """Greedy English transcription of one utterance with a window sized to the clip."""

    def __init__(self, model: WhisperModel, *, no_speech_threshold: float) -> None:
        self._model = model
        self._no_speech_threshold = no_speech_threshold
        self._tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en"
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))

    def transcribe(self, samples: np.ndarray) -> Transcript:
        """`samples`: float32 mono at 16 kHz in [-1, 1]."""
        secs = len(samples) / SAMPLE_RATE
        if secs > MAX_WINDOW_SECS:
            return self.transcribe_full(samples)
        padded = np.concatenate([samples, np.zeros(int(PAD_SECS * SAMPLE_RATE), np.float32)])
        features = self._model.feature_extractor(padded)
        window = ctranslate2.StorageView.from_array(
            np.ascontiguousarray(features[np.newaxis], dtype=np.float32)
        )
        encoded = self._model.model.encode(window, to_cpu=False)
        tokens, cut, no_speech = self._decode(encoded, [], token_budget(secs, first_pass=True))
        if no_speech >= self._no_speech_threshold:
            return Transcript("", no_speech, "window")
        if cut and not loops(self._tokenizer.decode(tokens)):  # more words, or a later loop
            tokens, cut, _ = self._decode(encoded, tokens, token_budget(secs, first_pass=False))
            if cut and not loops(self._tokenizer.decode(tokens)):
                return self.transcribe_full(samples)
        text = self._tokenizer.decode(tokens).strip()
        kept = without_loops(text)
        path = "window" if kept == text else "deduplicated"
        return Transcript(kept, no_speech, path)

    def _decode(
        self, encoded: Any, prefix: list[int], budget: int
    ) -> tuple[list[int], bool, float]:
        """Greedy decode of up to `budget` tokens (`prefix` included, as forced tokens):
        (tokens, whether the budget cut it before end-of-text, no-speech probability).

        CTranslate2's Whisper returns at most about half of `max_length` tokens (measured
        on 4.8: 16 -> 8, 30 -> 15, with or without a prefix), so `max_length` is asked
        for as twice the budget and anything past the budget is dropped.
        """
        result: Any = self._model.model.generate(
            encoded,
            [self._prompt + prefix],
            beam_size=1,
            max_length=2 * budget + 1,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        return tokens[:budget], len(tokens) >= budget, float(result.no_speech_prob)

    def transcribe_full(self, samples: np.ndarray) -> Transcript:
        """The standard way: faster-whisper's own transcription on 30 s windows."""
        segments, _ = self._model.transcribe(
            samples,
            language="en",
            beam_size=1,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        parts = list(segments)
        heard = [s for s in parts if s.no_speech_prob < self._no_speech_threshold]
        text = " ".join(s.text.strip() for s in heard).strip()
        no_speech = min((s.no_speech_prob for s in parts), default=1.0)
        return Transcript(text, no_speech, "full")


def token_budget(secs: float, *, first_pass: bool) -> int:
    """Tokens a decode of `secs` of speech may produce."""
    rate = FIRST_PASS_TOKENS_PER_SEC if first_pass else MAX_TOKENS_PER_SEC
    return MIN_TOKENS + math.ceil(secs * rate)


def without_loops(text: str) -> str:
    """`text` with every loop the guards below know cut out."""
    return drop_repeated_sentences(collapse_runs(cut_restart(cut_phrase_loop(text))))


def loops(text: str) -> bool:
    """Whether the decode has started over or is repeating itself."""
    return without_loops(text.strip()) != text.strip()


def cut_restart(text: str) -> str:
    """Cut a tail that only repeats what came before, from a sentence or clause start.

    The loops this catches: "What is the capital of France? What is the capital",
    "Where is it? Who wrote this? Who wrote" and "Right, right, right,".
    """
    words = list(_WORD_SPANS.finditer(text))
    norm = [w.group(1).lower() for w in words]
    # Where sentences and clauses start: the first word and any word after a pause mark.
    starts = [0, *(i + 1 for i, w in enumerate(words[:-1]) if w.group(2))]
    for i in starts[1:]:
        tail = norm[i:]
        if any(norm[s : s + len(tail)] == tail for s in starts if s < i):
            return text[: words[i - 1].end()].strip()
    return text


def cut_phrase_loop(text: str) -> str:
    """Cut where a phrase of `MIN_LOOP_WORDS` or more words starts over right after itself.

    Whisper's loops are not always punctuated: "John Smith and I live in Boston John Smith
    and I live in Boston John Smith and" -> "John Smith and I live in Boston", and "how do
    i boil an egg how do i boil" -> "how do i boil an egg". People rarely repeat five words
    or more back to back, or end on the three words they began with.
    """
    words = list(_WORD_SPANS.finditer(text))
    norm = [w.group(1).lower() for w in words]
    for end in range(MIN_LOOP_WORDS, len(norm) - MIN_LOOP_WORDS + 1):
        for size in range(MIN_LOOP_WORDS, min(end, len(norm) - end) + 1):
            if norm[end - size : end] == norm[end : end + size]:
                return text[: words[end - 1].end()].strip()
    # Or the words start over and run to the end: "how do i boil an egg how do i boil".
    for start in range(MIN_RESTART_WORDS, len(norm) - MIN_RESTART_WORDS + 1):
        if norm[start:] == norm[: len(norm) - start]:
            return text[: words[start - 1].end()].strip()
    return text


def collapse_runs(text: str) -> str:
    """Keep one copy of words said three or more times in a row ("Okay Okay Okay" -> "Okay")."""
    pieces = [m.group(0) for m in _WORD_SPANS.finditer(text)]
    norm = [m.group(1).lower() for m in _WORD_SPANS.finditer(text)]
    i = 0
    changed = False
    while i < len(norm):
        for n in range(1, MAX_RUN_WORDS + 1):
            copies = 1
            while norm[i + copies * n : i + (copies + 1) * n] == norm[i : i + n]:
                copies += 1
            if copies >= MIN_RUN_COPIES:
                del pieces[i + n : i + copies * n]
                del norm[i + n : i + copies * n]
                changed = True
                break
        i += 1
    return " ".join(pieces) if changed else text


def drop_repeated_sentences(text: str) -> str:
    """Keep one of any sentences repeated back to back ("Hi there. Hi there." -> "Hi there.")."""
    kept: list[str] = []
    last: list[str] | None = None
    for sentence in _SENTENCE.findall(text):
        words = _WORDS.findall(sentence.lower())
        if words and words == last:
            continue
        kept.append(sentence.strip())
        if words:
            last = words
    return " ".join(s for s in kept if s)
