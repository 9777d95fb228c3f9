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
# Fewer words than this before a comma sound choppy when synthesised on their own
# ("Well," / "Yes,"): keep them with what follows.
MIN_PHRASE_WORDS = 4


class PhraseTextAggregator(SimpleTextAggregator):
    """Sentences, plus clauses of at least `min_words` words ending in , ; : or a dash."""

    def __init__(self, *, min_words: int = MIN_PHRASE_WORDS, **kwargs: object) -> None:
        super().__init__(aggregation_type=TextType.SENTENCE, **kwargs)  # type: ignore[arg-type]
        self._min_words = min_words
        self._pending_clause = False

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        for char in text:
            # A clause boundary is confirmed by the space after the punctuation, so
            # "3,000" or "a:b" never split.
            if self._pending_clause:
                self._pending_clause = False
                if char.isspace() and len(self._text.split()) >= self._min_words:
                    phrase = self._text.strip()
                    await SimpleTextAggregator.reset(self)
                    yield Aggregation(text=phrase, type=TextType.SENTENCE)
                    continue
            async for sentence in super().aggregate(char):
                yield sentence
            if char in CLAUSE_PUNCTUATION:
                self._pending_clause = True

    async def reset(self) -> None:
        await super().reset()
        self._pending_clause = False

    async def handle_interruption(self) -> None:
        await super().handle_interruption()
        self._pending_clause = False
