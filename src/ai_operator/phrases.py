"""Phrase-level text aggregation for streaming TTS.

Pipecat's default aggregator hands the TTS whole sentences. With a local TTS that is fast
per phrase but waits for its text, the first audio of a long sentence is held back by the
whole sentence's generation. `PhraseTextAggregator` also releases text at a clause boundary
(comma, semicolon, colon, dash) once enough words have gathered to be spoken naturally, and
otherwise behaves exactly like Pipecat's sentence aggregator.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

CLAUSE_PUNCTUATION = frozenset(",;:—–")
# Where a sentence or a clause may end.
PHRASE_END = CLAUSE_PUNCTUATION | frozenset(".!?")
# Fewer words than this before a comma sound choppy when synthesised on their own
# ("Well," / "Yes,"): keep them with what follows.
MIN_PHRASE_WORDS = 4
# Except at the start of a reply: there the bot is silent until its first phrase is
# synthesised, and "Of course," takes a third as long to generate and speak as a 4-word
# clause. While it plays, the next clause is generated, so no gap follows it. (A one-word
# opener has a rule of its own, below.)
FIRST_PHRASE_MIN_WORDS = 2
# A one-word opener before a comma ("Absolutely,", "Sure,") is spoken on its own once this
# many more words follow without the sentence ending: the rest may be a long sentence
# ("Absolutely, a book called ... is an excellent choice for ...": 23 words the caller
# would wait for), while a short one stays whole ("Yes, fine." / "Sure, I can help.").
OPENER_FOLLOW_WORDS = 3
# A reply's first sentence that runs on without a comma is also spoken from the first of
# these words that comes after at least `FIRST_PHRASE_BREAK_AFTER_WORDS` words ("The
# octopus's ability to change its body colour is a unique trait | that allows ..."): on a
# small CPU every further word of the first phrase costs ~30 ms of generation and ~25 ms of
# synthesis before the bot makes a sound. Words that open a clause, where a speaker may
# pause anyway; not "and"/"or", which mostly join words ("salt and pepper").
FIRST_PHRASE_BREAK_AFTER_WORDS = 8
FIRST_PHRASE_BREAK_WORDS = frozenset(
    {
        "that", "which", "who", "whose", "because", "but", "while", "when", "where", "with",
        "if", "although", "though", "since", "until", "unless", "whereas",
    }
)  # fmt: skip


def _opens_clause(word: str) -> bool:
    return word.lower() in FIRST_PHRASE_BREAK_WORDS


def ends_first_phrase(text: str) -> bool:
    """Whether a reply's text so far holds a first phrase the TTS would speak on its own
    (loosely the aggregator's rules below: punctuation after at least
    `FIRST_PHRASE_MIN_WORDS` words, or a clause-opening word, followed by a space, after
    `FIRST_PHRASE_BREAK_AFTER_WORDS` words)."""
    words = text.split()
    if len(words) >= FIRST_PHRASE_MIN_WORDS and any(
        char in PHRASE_END for char in "".join(words[FIRST_PHRASE_MIN_WORDS - 1 :])
    ):
        return True
    complete = words if text[-1:].isspace() else words[:-1]
    if _opener(complete) and len(complete) > OPENER_FOLLOW_WORDS:
        return True
    return any(map(_opens_clause, complete[FIRST_PHRASE_BREAK_AFTER_WORDS:]))


def _opener(words: list[str]) -> bool:
    """Whether a reply's words open with one word and a comma ("Sure,"; not "3,")."""
    return bool(words) and words[0].endswith(",") and words[0][:-1].isalpha()


class PhraseTextAggregator(SimpleTextAggregator):
    """Sentences, plus clauses ending in , ; : or a dash: of at least `first_min_words`
    words at the start of a reply, `min_words` after; a reply's one-word opener once
    `OPENER_FOLLOW_WORDS` more words follow it; and a reply's first sentence up to a
    clause-opening word after `first_break_after_words` words."""

    def __init__(
        self,
        *,
        min_words: int = MIN_PHRASE_WORDS,
        first_min_words: int = FIRST_PHRASE_MIN_WORDS,
        first_break_after_words: int = FIRST_PHRASE_BREAK_AFTER_WORDS,
        **kwargs: object,
    ) -> None:
        super().__init__(aggregation_type=TextType.SENTENCE, **kwargs)  # type: ignore[arg-type]
        self._min_words = min_words
        self._first_min_words = first_min_words
        self._first_break_after_words = first_break_after_words
        self._pending_clause = False
        self._at_reply_start = True

    async def _first_phrase_at_space(self) -> str | None:
        """At a space in a reply's first sentence: its one-word opener, once
        `OPENER_FOLLOW_WORDS` more words followed it, or the text before its last word,
        when that word opens a clause and comes after enough words. The rest stays
        buffered."""
        words = self._text.split()
        text = self._text.rstrip()
        if len(words) > OPENER_FOLLOW_WORDS and _opener(words):
            cut = text.find(words[0]) + len(words[0])  # after "Sure,"
        elif len(words) > self._first_break_after_words and _opens_clause(words[-1]):
            cut = text.rfind(words[-1])  # before "that"
        else:
            return None
        phrase, rest = self._text[:cut].strip(), self._text[cut:].lstrip()
        await SimpleTextAggregator.reset(self)
        self._text = rest
        return phrase

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        for char in text:
            if self._at_reply_start and not self._pending_clause and char.isspace():
                phrase = await self._first_phrase_at_space()
                if phrase:
                    self._at_reply_start = False
                    yield Aggregation(text=phrase, type=TextType.SENTENCE)
            # A clause boundary is confirmed by the space after the punctuation, so
            # "3,000" or "a:b" never split.
            if self._pending_clause:
                self._pending_clause = False
                needed = self._first_min_words if self._at_reply_start else self._min_words
                if char.isspace() and len(self._text.split()) >= needed:
                    phrase = self._text.strip()
                    await SimpleTextAggregator.reset(self)
                    self._at_reply_start = False
                    yield Aggregation(text=phrase, type=TextType.SENTENCE)
                    continue
            async for sentence in super().aggregate(char):
                self._at_reply_start = False
                yield sentence
            if char in CLAUSE_PUNCTUATION:
                self._pending_clause = True

    async def flush(self) -> Aggregation | None:
        """The reply's end: what is left, and the next reply starts afresh."""
        self._at_reply_start = True
        self._pending_clause = False
        return await super().flush()

    async def reset(self) -> None:
        await super().reset()
        self._pending_clause = False

    async def handle_interruption(self) -> None:
        await super().handle_interruption()
        self._pending_clause = False
        self._at_reply_start = True
