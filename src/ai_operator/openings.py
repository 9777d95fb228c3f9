"""Judging how a reply opens: a guard for the small local LLM.

SmolLM2-135M has two habits that take over a conversation:
- It drifts out of English. Asked "What is the capital of France?", it opens about one
  reply in four in French ("Bien sûr, the capital of France is Paris.", "Allez, le Grand
  Parlement de Paris ..."), and once one French reply is in the conversation nearly every
  later reply is French gibberish (25-27 of 27 in three conversations primed that way,
  whatever the temperature or repeat penalty).
- It copies itself. An odd opener once ("The answer is no:", "Bahaha, my friend.") and
  the following replies open with it too: nine turns in a row in one benchmark run. What
  it copies is a short set phrase; a sentence opening that fits again ("The capital of
  France ..." then "The capital of Spain ...") is not a copy.

So the local LLM reads each reply's first `CHECK_WORDS` words before any of it is spoken
(`rejection`) and generates it again, without the offending earlier replies in the prompt
(`for_retry`), when they are not English or repeat an earlier reply's first words.

Both checks are heuristics on a few words, tuned to miss nothing that starts a drift: a
letter with a diacritic, a foreign word first, or more foreign words than English ones;
the same first words as an earlier reply that opened with a short phrase. A reply flagged
by mistake ("Café au lait is ...", "Des Moines is ...") only costs a regeneration, and the
last attempt is spoken whatever it says.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# How many words of a reply are read before it is judged (and before any is spoken).
CHECK_WORDS = 3
# An earlier reply whose first phrase (up to its first punctuation mark) is this short
# opened with a set phrase, which a reply starting with the same words copies.
SET_PHRASE_MAX_WORDS = 4
_PHRASE_END = re.compile(r"[,.;:!?\u2013\u2014]")

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")

# Function words of the languages SmolLM2 drifts into (French, Spanish, Italian, German,
# Portuguese) that are not English words themselves.
FOREIGN_WORDS = frozenset(
    """
    le la les de des un une et est il ils elle elles je vous nous que qui pour dans du
    au aux avec sur pas cela ce cette ces mon ma mes sa ses tres bien allez voici voila
    oui merci bonjour salut hola gracias c'est l'un d'un qu'il el los las es por con una
    del muy pero como der das und ist nicht ich ein eine zu auf di che sono della gli
    uma isso
    """.split()
)
ENGLISH_WORDS = frozenset(
    """
    the a an is are was were be of to and in on at for with it its it's i i'm you you're
    your we they he she this that what how why who can will would sure yes no not of
    there here my me
    """.split()
)


def first_words(text: str, count: int = CHECK_WORDS) -> list[str]:
    """The first `count` words of `text`, lower-cased (apostrophes kept: "c'est")."""
    return [m.group(0).lower() for m in _WORD.finditer(text)][:count]


def opening_known(text: str) -> bool:
    """Whether `text` (a reply so far) holds its first `CHECK_WORDS` words, complete."""
    words = first_words(text, CHECK_WORDS + 1)
    return len(words) > CHECK_WORDS or (len(words) == CHECK_WORDS and not text[-1].isalnum())


def looks_foreign(text: str) -> bool:
    """True if the opening words of `text` are likely not English."""
    words = first_words(text)
    if any(not ch.isascii() for word in words for ch in word):
        return True
    if words and words[0] in FOREIGN_WORDS:  # "Bonjour! The capital of France ..."
        return True
    foreign = sum(word in FOREIGN_WORDS for word in words)
    english = sum(word in ENGLISH_WORDS for word in words)
    return foreign > english


def _copies(text: str, earlier: str) -> bool:
    words = first_words(text)
    if len(words) < CHECK_WORDS or words != first_words(earlier):
        return False
    first_phrase = _PHRASE_END.split(earlier, maxsplit=1)[0]
    return len(first_words(first_phrase, SET_PHRASE_MAX_WORDS + 1)) <= SET_PHRASE_MAX_WORDS


def _replies(messages: Iterable[dict[str, Any]]) -> list[str]:
    return [
        m["content"]
        for m in messages
        if m.get("role") == "assistant" and isinstance(m.get("content"), str)
    ]


def rejection(text: str, messages: Iterable[dict[str, Any]]) -> str | None:
    """Why a reply opening with `text` should be generated again after `messages` (the
    prompt), or None if it may be spoken."""
    if looks_foreign(text):
        return "it is not English"
    if any(_copies(text, reply) for reply in _replies(messages)):
        return "it opens as an earlier reply did"
    return None


def for_retry(messages: list[dict[str, Any]], rejected: str) -> list[dict[str, Any]]:
    """The prompt for another try after a reply opening with `rejected`: without the
    assistant's replies that open in another language or with the same words (with one
    of those in the prompt, the model is likely to follow it again)."""
    return [
        m
        for m in messages
        if not (
            m.get("role") == "assistant"
            and isinstance(m.get("content"), str)
            and (looks_foreign(m["content"]) or _copies(rejected, m["content"]))
        )
    ]
