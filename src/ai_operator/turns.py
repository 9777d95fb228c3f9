"""Turn-taking judgements that need no Pipecat: words, playback, echo.

Everything here is a pure function or a small model fed with explicit times, so the rules
can be tested without a pipeline and reused by the benchmarks:

- what counts as a backchannel ("mm-hmm", "yeah") and what as an attempt to take the floor;
- whether a transcript is the bot's own voice coming back (echo);
- whether an utterance sounds unfinished ("I'd like to book a table for ..."), or is a
  question or a request (which hand the floor over more surely than a statement);
- `Playout`, a model of the client's playback: which bot audio has played by when, how loud
  it was (the echo reference) and how much of each sentence the user has heard;
- `heard_prefix`, the words of a sentence that fit in the part of its audio that played.

The word lists and ratios below are defaults: `Settings` can replace each one
(`AI_OPERATOR_BACKCHANNEL_WORDS=...`), and the pipeline passes them in as a `Vocabulary`.

Piper gives no word timings, so "heard" is estimated from audio duration: a sentence whose
audio played for 40 % of its length is taken to have had its first 40 % of characters heard.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass, field

# Appended to the assistant's words in the context when the user cut it off, so the model
# sees that the sentence broke off there and neither repeats nor silently continues it.
INTERRUPTED_MARK = " —"

# Words that, alone or together, acknowledge without asking for the floor.
BACKCHANNEL_WORDS = frozenset(
    {
        "mm", "mmm", "hmm", "mhm", "mm-hmm", "mmhmm", "uh-huh", "uhhuh", "uh", "huh", "ah",
        "aha", "oh", "yeah", "yes", "yep", "yup", "ya", "okay", "ok", "right", "sure",
        "alright", "cool", "nice", "wow", "great", "fine", "good", "true", "exactly",
        "indeed", "totally", "absolutely", "gotcha",
    }
)  # fmt: skip
BACKCHANNEL_PHRASES = frozenset(
    {"i see", "got it", "go on", "makes sense", "that's right", "of course", "uh huh", "mm hmm"}
)
# A short overlap containing one of these is someone taking the floor, not acknowledging.
INTERRUPTION_CUES = frozenset(
    {
        "stop", "wait", "hold", "hang", "no", "nope", "sorry", "excuse", "pardon", "actually",
        "but", "what", "why", "how", "when", "where", "who", "which", "can", "could", "would",
        "tell", "repeat", "again", "hey", "listen", "question", "enough", "quiet", "shut",
    }
)  # fmt: skip
# An utterance ending in one of these is very likely to go on after the pause.
UNFINISHED_ENDINGS = frozenset(
    {
        "a", "an", "the", "to", "for", "of", "in", "on", "at", "with", "from", "about", "into",
        "and", "or", "but", "so", "because", "if", "that", "than", "then", "my", "your", "our",
        "their", "his", "her", "its", "is", "are", "was", "were", "am", "be", "i", "we", "you",
        "they", "it's", "i'm", "i'd", "i'll", "we're", "we'd", "can", "could", "would", "will",
        "should", "um", "uh", "er", "erm", "like", "very", "really", "some", "any",
    }
)  # fmt: skip
UNFINISHED_PUNCTUATION = (",", "...", "…", "-", "—", "–", ":", ";")
# ...except where such a word closes the clause it is in: a subject and its be-verb after
# a question word or "here"/"there" ("... what time it is", "... where you are", "Here it
# is."), a be-verb and its subject closing a question ("How are you?", "Who is it?"),
# and a few fixed phrases ("Thank you."). Without this, "Stop please and tell me what
# time it is." waited the longest pause as unfinished, in every barge-in of the bench.
CLOSING_SUBJECTS = frozenset({"i", "you", "he", "she", "it", "we", "they", "that", "this"})
CLOSING_BE = frozenset({"is", "are", "was", "were", "am"})
CLAUSE_WORDS = frozenset(
    {"what", "where", "who", "whom", "how", "when", "why", "which", "whatever", "wherever"}
)
CLOSING_PHRASES = frozenset({("thank", "you"), ("see", "you"), ("love", "you")})
# A sentence opening with one of these asks something even when the STT left out the "?"
# (Whisper tiny.en writes "Who wrote Romeo and Juliet." as often as not).
QUESTION_OPENERS = frozenset(
    {
        "who", "whom", "whose", "what", "which", "when", "where", "why", "how", "is", "are",
        "was", "were", "am", "do", "does", "did", "can", "could", "will", "would", "shall",
        "should", "isn't", "aren't", "wasn't", "weren't", "don't", "doesn't", "didn't",
        "can't", "couldn't", "won't", "wouldn't", "shouldn't",
    }
)  # fmt: skip
# ...unless, after a question word, the next word makes it an exclamation or a clause
# ("What a day.", "What I want is a table."): a question puts the verb before the subject
# ("What do I want?"), as an opening auxiliary does ("Can you ...").
NOT_QUESTION_SECOND_WORDS = frozenset({"a", "an", "i", "you", "we", "they", "he", "she"})
# A sentence opening with one of these verbs asks the bot to do something ("Tell me a
# joke.", "Please explain ..."): like a question, it hands the floor over.
REQUEST_OPENERS = frozenset(
    {
        "tell", "give", "explain", "describe", "show", "list", "name", "recommend", "suggest",
        "help", "find", "play", "read", "define", "translate", "summarize", "summarise",
        "remind", "repeat", "spell", "calculate", "compare", "teach", "sing", "write",
        # Asking the bot to stop or go on: "Stop, please, and tell me ...", "Go on."
        "stop", "wait", "continue", "go", "say",
    }
)  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?]+\s+")

# A transcript is the bot's own voice when this share of its words were just said by the bot.
ECHO_WORD_SHARE = 0.6
# Speaking rate used to size a sentence whose audio has not fully arrived yet (streaming TTS).
SPEECH_SECS_PER_CHAR = 0.075

_WORD = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-case words of `text`, keeping inner apostrophes and hyphens ("mm-hmm", "i'd")."""
    return [w.replace("’", "'") for w in _WORD.findall(text.lower())]


def parse_word_list(text: str) -> frozenset[str]:
    """A comma-separated setting as a set of entries, each normalised like `words` does:
    "Mm-hmm, I see" -> {"mm-hmm", "i see"}. Empty entries are dropped."""
    entries = (" ".join(words(entry)) for entry in text.split(","))
    return frozenset(entry for entry in entries if entry)


def format_word_list(entries: frozenset[str]) -> str:
    """The inverse of `parse_word_list`, sorted, for defaults shown in `--help`."""
    return ", ".join(sorted(entries))


@dataclass(frozen=True)
class Vocabulary:
    """The word lists the rules below read; each can be replaced from `Settings`."""

    backchannel_words: frozenset[str] = BACKCHANNEL_WORDS
    backchannel_phrases: frozenset[str] = BACKCHANNEL_PHRASES
    interruption_cues: frozenset[str] = INTERRUPTION_CUES
    unfinished_endings: frozenset[str] = UNFINISHED_ENDINGS
    question_openers: frozenset[str] = QUESTION_OPENERS
    request_openers: frozenset[str] = REQUEST_OPENERS


DEFAULT_VOCABULARY = Vocabulary()


def is_backchannel(text: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> bool:
    """True when `text` only acknowledges ("Mm-hmm.", "Yeah, yeah.", "I see")."""
    ws = words(text)
    if not ws:
        return False
    if " ".join(ws) in vocabulary.backchannel_phrases:
        return True
    return all(w in vocabulary.backchannel_words for w in ws)


def has_interruption_cue(text: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> bool:
    return any(w in vocabulary.interruption_cues for w in words(text))


def is_echo_of(transcript: str, bot_text: str, share: float = ECHO_WORD_SHARE) -> bool:
    """True when at least `share` of the words of `transcript` were just spoken by the bot
    (its voice leaking back).

    One-word transcripts are never called echo: "okay" from the user and "okay" from the bot
    look the same, and the backchannel rule already keeps the bot talking for them.
    """
    heard = words(transcript)
    if len(heard) < 2:
        return False
    said = set(words(bot_text))
    return sum(w in said for w in heard) / len(heard) >= share


def sounds_unfinished(transcript: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> bool:
    """True when the utterance stops mid-sentence: on a function word, filler or a comma."""
    text = transcript.strip()
    if not text:
        return False
    if text.endswith(UNFINISHED_PUNCTUATION):
        return True
    ws = words(text)
    return bool(ws) and ws[-1] in vocabulary.unfinished_endings and not _closes_clause(text)


def _closes_clause(text: str) -> bool:
    """Whether the last sentence's last two words end a clause although the last one often
    leaves it open (see CLOSING_SUBJECTS)."""
    ws = last_sentence_words(text)
    if len(ws) < 2:
        return False
    before, last = ws[-2], ws[-1]
    if (before, last) in CLOSING_PHRASES:
        return True
    if before in CLOSING_SUBJECTS and last in CLOSING_BE:
        # "... what time it is", "how old you are", "Here it is": the clause's opener at
        # most three words before its subject ("What I mean is that it is" goes on).
        opener = ws[-5:-2]
        return any(w in CLAUSE_WORDS for w in opener) or opener[-1:] in (["here"], ["there"])
    # "How are you?": a be-verb and its subject after a question word, three words at least
    # (a bare "Can you" or "Is it" may well go on).
    return (
        before in CLOSING_BE and last in CLOSING_SUBJECTS and len(ws) >= 3 and ws[0] in CLAUSE_WORDS
    )


def is_question(transcript: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> bool:
    """True when the transcript's last sentence asks something: it ends in a question
    mark, or (ending otherwise, though not in "!") opens with a question word or an
    inverted auxiliary ("Who wrote ...", "Can you ..."), a question word not followed by
    an article or a subject pronoun ("What a day.", "What I need is ...").

    Whisper and Deepgram punctuate from prosody and syntax, and a small Whisper often ends
    a clear question with a full stop; without the opener rule such a question waited the
    longer pause of a statement.
    """
    text = transcript.strip()
    if text.endswith("?"):
        return True
    if text.endswith("!"):
        return False
    last = last_sentence_words(text)
    if len(last) < 2 or last[0] not in vocabulary.question_openers:
        return False
    question_word = last[0].startswith("wh") or last[0] == "how"
    return not (question_word and last[1] in NOT_QUESTION_SECOND_WORDS)


def is_request(transcript: str, vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> bool:
    """True when the transcript's last sentence asks the bot to do something: it opens
    (after an optional "please") with one of `vocabulary.request_openers`."""
    last = last_sentence_words(transcript)
    if last[:1] == ["please"]:
        last = last[1:]
    return bool(last) and last[0] in vocabulary.request_openers


def last_sentence_words(transcript: str) -> list[str]:
    return words(_SENTENCE_END.split(transcript.strip())[-1])


class Overlap(enum.Enum):
    """What a short utterance over the bot turned out to be."""

    BACKCHANNEL = "backchannel"  # acknowledgement or noise: the bot goes on
    ECHO = "echo"  # the bot's own voice: the bot goes on
    INTERRUPTION = "interruption"  # the user takes the floor


def judge_short_overlap(
    transcript: str,
    bot_text: str,
    *,
    min_words: int,
    echo_share: float = ECHO_WORD_SHARE,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> Overlap:
    """Classify a short (backchannel-length) utterance the user made while the bot spoke.

    An empty transcript is noise (a cough, a click). A cue word ("stop", "wait", "what")
    or `min_words` words take the floor; anything else short lets the bot go on. Whisper
    tiny often mishears non-words ("mm-hmm" -> "in a month"), so the rule only needs to
    recognise what *does* interrupt.
    """
    ws = words(transcript)
    if not ws:
        return Overlap.BACKCHANNEL
    if is_echo_of(transcript, bot_text, echo_share):
        return Overlap.ECHO
    if has_interruption_cue(transcript, vocabulary):
        return Overlap.INTERRUPTION
    if is_backchannel(transcript, vocabulary) or len(ws) < min_words:
        return Overlap.BACKCHANNEL
    return Overlap.INTERRUPTION


def heard_prefix(text: str, fraction: float) -> str:
    """The leading words of `text` spoken in the first `fraction` of its audio.

    Speech time is taken as proportional to characters; a word counts as heard when its
    last character falls inside the played share.
    """
    if fraction >= 1.0:
        return text.strip()
    if fraction <= 0.0:
        return ""
    budget = fraction * len(text.strip())
    kept: list[str] = []
    position = 0
    for word in text.split():
        position += len(word) + (1 if kept else 0)
        if position > budget:
            break
        kept.append(word)
    return " ".join(kept)


def is_echo_level(input_rms: float, reference_rms: float, margin_db: float) -> bool:
    """True when input is at least `margin_db` quieter than the bot audio playing meanwhile."""
    if reference_rms <= 0.0:
        return False
    return input_rms < reference_rms * 10 ** (-margin_db / 20)


# ------------------------------------------------------------------------------------------
# The client's playback
# ------------------------------------------------------------------------------------------


@dataclass
class _Chunk:
    start: float
    end: float
    rms: float
    segment: int


@dataclass
class Segment:
    """One sentence (TTS request) of a reply: its text and how much audio it has."""

    text: str
    audio_secs: float = 0.0
    complete: bool = False
    secs_per_char: float = SPEECH_SECS_PER_CHAR  # sizes the sentence until all audio is in

    @property
    def expected_secs(self) -> float:
        if self.complete:
            return self.audio_secs
        return max(self.audio_secs, len(self.text) * self.secs_per_char)


class Playout:
    """A model of the client playing the bot's audio as it arrives.

    Audio released at time `t` starts playing at `max(t, end of what was released before)`,
    as a client that plays a FIFO of chunks does. Times are seconds on one monotonic clock.
    The model answers three questions: how far ahead of playback the server is (pacing), how
    loud the bot was over a window (the echo reference), and how much of each sentence has
    been played (what the user heard).
    """

    def __init__(self, history_secs: float = 30.0) -> None:
        self._history_secs = history_secs
        self._chunks: deque[_Chunk] = deque()
        self.playhead = 0.0  # when everything released so far will have played

    def release(self, duration: float, rms: float, now: float, segment: int = -1) -> float:
        """Record `duration` seconds of audio sent at `now`; returns when it starts playing."""
        start = max(now, self.playhead)
        self.playhead = start + duration
        self._chunks.append(_Chunk(start, self.playhead, rms, segment))
        while self._chunks and self._chunks[0].end < now - self._history_secs:
            self._chunks.popleft()
        return start

    def ahead(self, now: float) -> float:
        """Seconds of released audio still waiting to play at `now`."""
        return max(0.0, self.playhead - now)

    def last_audio_end(self) -> float:
        return self._chunks[-1].end if self._chunks else 0.0

    def flush(self, now: float) -> None:
        """The client dropped what had not played yet (an interruption)."""
        while self._chunks and self._chunks[-1].start >= now:
            self._chunks.pop()
        if self._chunks and self._chunks[-1].end > now:
            self._chunks[-1].end = now
        self.playhead = min(self.playhead, now)

    def level(self, t0: float, t1: float) -> float:
        """Loudest chunk RMS playing at any time in [t0, t1]; 0 when silent."""
        loudest = 0.0
        for chunk in reversed(self._chunks):
            if chunk.end < t0:
                break
            if chunk.start <= t1:
                loudest = max(loudest, chunk.rms)
        return loudest

    def played_secs(self, segment: int, now: float) -> float:
        total = 0.0
        for chunk in self._chunks:
            if chunk.segment == segment and chunk.start < now:
                total += min(chunk.end, now) - chunk.start
        return total


@dataclass
class Reply:
    """The sentences of one bot reply, in order, and where they sit in the playout."""

    key: str
    segments: list[Segment] = field(default_factory=list)
    first_segment_id: int = 0
    # Set once the reply's text reached the context in full (it was not cut off).
    committed: bool = False

    def segment_id(self, index: int) -> int:
        return self.first_segment_id + index

    def heard_text(self, playout: Playout, now: float) -> str:
        """The words of this reply the user has heard by `now`: whole sentences that played
        to the end, then the heard share of the first one that did not."""
        heard: list[str] = []
        for index, segment in enumerate(self.segments):
            played = playout.played_secs(self.segment_id(index), now)
            expected = segment.expected_secs
            if segment.complete and expected > 0 and played >= expected - 1e-6:
                heard.append(segment.text.strip())
                continue
            part = heard_prefix(segment.text, played / expected if expected > 0 else 0.0)
            if part:
                heard.append(part)
            break
        return " ".join(heard)
