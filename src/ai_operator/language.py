"""Is a reply opening in English? A guard for the small local LLM.

SmolLM2-135M, asked "What is the capital of France?", opens about one reply in four in
French ("Bien sûr, the capital of France is Paris.", "Allez, le Grand Parlement de
Paris ..."), and once one French reply is in the conversation every later reply is French
gibberish: 25-27 of 27 replies in three conversations primed that way, whatever the
temperature or repeat penalty. The local LLM therefore checks the first words of each
reply (`looks_foreign`) before any of it is spoken, and generates it again if they are
not English.

The check is a heuristic on a few words, tuned to miss nothing that starts a drift: a
letter with a diacritic, or a foreign function word with no English one beside it. An
English reply it flags by mistake ("Café au lait is ...") only costs a regeneration.
"""

from __future__ import annotations

import re
from typing import Any

# How many words of a reply are read before it is judged (and before any is spoken).
CHECK_WORDS = 3

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")

# Function words of the languages SmolLM2 drifts into (French, Spanish, Italian, German,
# Portuguese) that are not English words themselves.
FOREIGN_WORDS = frozenset(
    """
    le la les de des un une et est il ils elle elles je vous nous que qui pour dans du au
    aux avec sur pas cela ce cette ces mon ma mes sa ses tres bien allez voici voila oui
    merci bonjour c'est l'un d'un qu'il el los las es por con una del muy pero como der
    das und ist nicht ich ein eine zu auf di che sono della gli uma isso
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


def looks_foreign(text: str) -> bool:
    """True if the opening words of `text` are likely not English."""
    words = first_words(text)
    if any(not ch.isascii() for word in words for ch in word):
        return True
    foreign = sum(word in FOREIGN_WORDS for word in words)
    english = sum(word in ENGLISH_WORDS for word in words)
    return foreign > 0 and english == 0


def opening_known(text: str) -> bool:
    """Whether `text` (a reply so far) holds its first `CHECK_WORDS` words, complete."""
    words = first_words(text, CHECK_WORDS + 1)
    return len(words) > CHECK_WORDS or (len(words) == CHECK_WORDS and not text[-1].isalnum())


def without_foreign_replies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`messages` less the assistant's replies that open in another language: with one in
    the prompt, the model goes on in that language."""
    return [
        m
        for m in messages
        if not (
            m.get("role") == "assistant"
            and isinstance(m.get("content"), str)
            and looks_foreign(m["content"])
        )
    ]
