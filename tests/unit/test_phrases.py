from __future__ import annotations

import pytest

from ai_operator.phrases import PhraseTextAggregator


async def chunks(text: str, step: int = 3) -> list[str]:
    """Feed `text` in small token-like pieces; return what the aggregator releases."""
    agg = PhraseTextAggregator()
    out: list[str] = []
    for i in range(0, len(text), step):
        async for a in agg.aggregate(text[i : i + step]):
            out.append(a.text)
    tail = await agg.flush()
    if tail and tail.text:
        out.append(tail.text)
    return out


async def test_sentences_are_released_like_pipecat():
    assert await chunks("Hello there. How are you today?") == ["Hello there.", "How are you today?"]


async def test_long_clause_is_released_at_the_comma():
    text = "It is a beautiful city with many landmarks, like the Eiffel Tower."
    assert await chunks(text) == [
        "It is a beautiful city with many landmarks,",
        "like the Eiffel Tower.",
    ]


@pytest.mark.parametrize(
    "text",
    ["Well, I think so.", "It costs 3,000 dollars in total here.", "Yes, sure, fine."],
)
async def test_short_clauses_and_numbers_stay_whole(text):
    assert await chunks(text) == [text]


async def test_nothing_is_lost_or_duplicated():
    text = "First clause has enough words, second clause also has words; third part: done. Next!"
    assert " ".join(await chunks(text, step=1)) == text


async def test_interruption_clears_pending_text():
    agg = PhraseTextAggregator()
    async for _ in agg.aggregate("Some words that are pending,"):
        pass
    await agg.handle_interruption()
    assert await agg.flush() is None
