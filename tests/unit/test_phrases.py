from __future__ import annotations

import pytest

from ai_operator.phrases import PhraseTextAggregator, ends_first_phrase


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
    ["Well, I think so.", "It costs 3,000 dollars in total here.", "Yes, fine."],
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


async def test_a_reply_may_open_with_a_short_clause_but_later_clauses_need_more_words():
    text = "Of course, it is nice, if busy, and the food is great."
    assert await chunks(text) == [
        "Of course,",  # two words are enough to start speaking
        "it is nice, if busy,",  # later clauses keep 4 words together
        "and the food is great.",
    ]


async def test_every_reply_starts_afresh():
    agg = PhraseTextAggregator()
    released: list[str] = []
    for reply in ("Of course, here it is now.", "Sure thing, it is done now."):
        async for a in agg.aggregate(reply):
            released.append(a.text)
        tail = await agg.flush()  # Pipecat flushes at the end of each LLM response
        if tail and tail.text:
            released.append(tail.text)
    assert released == ["Of course,", "here it is now.", "Sure thing,", "it is done now."]


def test_the_first_phrase_ends_at_punctuation_after_two_words():
    assert not ends_first_phrase("Sure")
    assert not ends_first_phrase("Sure,")  # one word: the aggregator keeps it
    assert not ends_first_phrase("The capital of France is")
    assert ends_first_phrase("Of course,")
    assert ends_first_phrase("Of course, the")
    assert ends_first_phrase("The capital of France is Paris.")
    assert ends_first_phrase("Is it Paris?")


async def test_a_long_first_sentence_is_spoken_from_a_clause_opening_word():
    text = (
        "The octopus's ability to change its colour is a unique trait that lets it hide, "
        "which is clever because sharks that hunt it see only rock."
    )
    assert await chunks(text, step=2) == [
        "The octopus's ability to change its colour is a unique trait",
        "that lets it hide,",
        # later phrases break only at punctuation
        "which is clever because sharks that hunt it see only rock.",
    ]
    assert " ".join(await chunks(text, step=1)) == text


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        # "with" comes too early to break at
        ("It is a beautiful city with many landmarks and a river.", None),
        # no clause-opening word
        ("You will need salt and pepper and butter and eggs and some milk.", None),
        # not the reply's first sentence
        (
            "Sure. The octopus's ability to change its colour is a trait that helps.",
            ["Sure.", "The octopus's ability to change its colour is a trait that helps."],
        ),
    ],
)
async def test_other_sentences_are_not_broken_at_clause_words(text, phrases):
    assert await chunks(text) == (phrases or [text])


def test_the_first_phrase_may_end_before_a_clause_opening_word():
    long = "The octopus's ability to change its colour is a unique trait"
    assert not ends_first_phrase(long)
    assert not ends_first_phrase(long + " that")  # the aggregator waits for the space
    assert ends_first_phrase(long + " that ")
    assert ends_first_phrase(long + " that lets")
    assert not ends_first_phrase("It is a big city that ")  # too early for a break


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        (
            'Absolutely, a book called "Dune" by Frank Herbert is a great choice.',
            ["Absolutely,", 'a book called "Dune" by Frank Herbert is a great choice.'],
        ),
        ("Sure, I can help you with that.", ["Sure,", "I can help you with that."]),
        # the sentence ends within three more words: it stays whole
        ("Yes, fine.", ["Yes, fine."]),
        ("Sure, I can help.", ["Sure, I can help."]),
        # a number is not an opener
        ("3, 4 and 5 are all small numbers.", ["3, 4 and 5 are all small numbers."]),
        # not the reply's first sentence
        (
            "Okay. Well, the museum opens at nine tomorrow.",
            ["Okay.", "Well, the museum opens at nine tomorrow."],
        ),
    ],
)
async def test_a_one_word_opener_is_spoken_alone_before_a_longer_sentence(text, phrases):
    assert await chunks(text) == phrases
    assert await chunks(text, step=1) == phrases


def test_the_first_phrase_may_be_a_one_word_opener_once_more_words_follow():
    assert not ends_first_phrase("Absolutely, a book")
    assert not ends_first_phrase("Absolutely, a book called")  # waits for the space
    assert ends_first_phrase("Absolutely, a book called ")
    assert not ends_first_phrase("3, 4 and 5 are")  # a list, not an opener
