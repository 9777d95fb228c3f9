"""The guard against a local reply drifting out of English or copying itself (openings.py)."""

from __future__ import annotations

import pytest

from ai_operator.openings import for_retry, looks_foreign, opening_known, rejection

# Openings SmolLM2-135M produced in benchmark runs and offline trials.
SEEN_FOREIGN = [
    "Bien sûr, the capital of France is Paris.",
    "Allez, le Grand Parlement de Paris est la cité du Grand Parlements.",
    "La fenêtre de la petite sprite est un élément plus peuplus.",
    "Rosalier de la Borde, il y a l'enfant.",
    "Il s'agrait lui, le cuit est la fer.",
    "Cela est toujours de la bouche.",
    "C'est toujours possible, il est bon au changement.",
    "Alles mores, le france est la capital de France.",
    "Ceux, cette capital de France est Paris.",
    "Un deux, les mots.",
    "El Tésmex, el tesmaz.",
    "Bonjour! The capital of France is Paris.",
]
ENGLISH = [
    "The capital of France is Paris.",
    "Absolutely, a book called The Nightingale is an excellent read.",
    "Sure! Le Mans is a town in France.",
    "The capital of Iowa is Des Moines.",
    "I'm sorry for the confusion.",
    "To boil an egg, put it in boiling water.",
    "Octopuses have three hearts.",
    "Yes.",
    "",
]


@pytest.mark.parametrize("text", SEEN_FOREIGN)
def test_replies_that_drifted_are_caught_by_their_first_words(text):
    assert looks_foreign(text)


@pytest.mark.parametrize("text", ENGLISH)
def test_english_replies_pass(text):
    assert not looks_foreign(text)


def test_only_the_opening_is_judged():
    assert not looks_foreign("The French say bien sûr, c'est la vie.")


def test_the_opening_is_known_once_three_words_are_complete():
    assert not opening_known("The capital")
    assert not opening_known("The capital of")  # "of" may be the start of "often"
    assert opening_known("The capital of ")
    assert opening_known("Bien sûr, le G")  # a fourth word has begun
    assert opening_known("Yes, it is.")


def test_a_reply_opening_with_an_earlier_replys_words_is_rejected():
    earlier = [
        {"role": "assistant", "content": "The answer is no: spiders have eight legs."},
        {"role": "user", "content": "And ants?"},
    ]
    assert rejection("The answer is no: ants", earlier) is not None
    assert rejection("The answer, is NO", earlier) is not None  # words, not punctuation
    assert rejection("The answer is six.", earlier) is not None  # three words are enough
    assert rejection("Ants have six legs.", earlier) is None
    assert rejection("The answer", earlier) is None  # a whole reply shorter than 3 words
    assert rejection("Bien sûr, ants", earlier) == "it is not English"
    user_words = [{"role": "user", "content": "The answer is what?"}]
    assert rejection("The answer is six.", user_words) is None  # only replies count


def test_a_sentence_opening_that_fits_again_is_not_a_copy():
    earlier = [{"role": "assistant", "content": "The capital of France is Paris."}]
    assert rejection("The capital of Spain is Madrid.", earlier) is None
    odd = [{"role": "assistant", "content": "Ladies and gentlemen, Paris."}]
    assert rejection("Ladies and gentlemen, Madrid.", odd) is not None


def test_foreign_replies_are_left_out_of_a_retry_prompt():
    messages = [
        {"role": "system", "content": "Le système."},  # not a reply: kept
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Bien sûr, c'est Paris."},
        {"role": "user", "content": "And of Spain?"},
    ]
    kept = for_retry(messages, "Paris is the capital")
    assert [m["content"] for m in kept] == [
        "Le système.",
        "Hello! How can I help?",
        "What is the capital of France?",
        "And of Spain?",
    ]


def test_replies_opening_as_the_rejected_one_are_left_out_of_a_retry_prompt():
    messages = [
        {"role": "assistant", "content": "Bahaha, my friend. Paris."},
        {"role": "user", "content": "And Spain?"},
        {"role": "assistant", "content": "Madrid, of course."},
        {"role": "user", "content": "And Italy?"},
    ]
    kept = for_retry(messages, "Bahaha, my friend. Rome.")
    assert [m["content"] for m in kept] == ["And Spain?", "Madrid, of course.", "And Italy?"]
