"""Pure turn-taking rules: backchannels, cues, echo, unfinished utterances, playback model."""

from __future__ import annotations

import pytest

from ai_operator.turns import (
    Overlap,
    Playout,
    Reply,
    Segment,
    Vocabulary,
    format_word_list,
    heard_prefix,
    is_backchannel,
    is_echo_level,
    is_echo_of,
    is_question,
    is_request,
    judge_short_overlap,
    parse_word_list,
    sounds_unfinished,
    words,
)


def test_words_keep_inner_apostrophes_and_hyphens():
    assert words("Mm-hmm, I'd say YES!") == ["mm-hmm", "i'd", "say", "yes"]


@pytest.mark.parametrize(
    "text", ["Mm-hmm.", "Yeah.", "okay", "Right.", "Uh-huh.", "Yeah, yeah.", "I see.", "mhm"]
)
def test_backchannels_are_recognised(text):
    assert is_backchannel(text)


@pytest.mark.parametrize("text", ["", "Stop.", "What about Paris?", "yeah but no"])
def test_other_words_are_not_backchannels(text):
    assert not is_backchannel(text)


@pytest.mark.parametrize(
    ("transcript", "expected"),
    [
        ("", Overlap.BACKCHANNEL),  # a cough: nothing transcribed
        ("Yeah.", Overlap.BACKCHANNEL),
        ("in a month.", Overlap.BACKCHANNEL),  # Whisper tiny's "mm-hmm"
        ("Stop.", Overlap.INTERRUPTION),
        ("Wait.", Overlap.INTERRUPTION),
        ("No.", Overlap.INTERRUPTION),
        ("What time is it", Overlap.INTERRUPTION),
        ("I want the blue one please", Overlap.INTERRUPTION),  # enough words
        ("the weather today", Overlap.ECHO),  # the bot's own words
    ],
)
def test_short_overlap_verdicts(transcript, expected):
    bot = "Let me tell you about the weather today in Paris."
    assert judge_short_overlap(transcript, bot, min_words=4) is expected


def test_one_word_is_never_called_echo():
    assert not is_echo_of("okay", "okay so here is the plan")
    assert is_echo_of("here is the plan", "okay so here is the plan")
    assert not is_echo_of("what is the plan", "okay so here we go")


@pytest.mark.parametrize(
    "text",
    [
        "I'd like to book a table for",
        "My name is",
        "Um, I think, um,",
        "So we could...",
        "and",
        # The words that close a clause below, where they do not.
        "The problem is",
        "What I want to say is",
        "What I mean is that it is",
        "The thing about it is",
        "Can you",
        "And you",
        "So what we could",
        "Thank you for",
    ],
)
def test_unfinished_utterances(text):
    assert sounds_unfinished(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "What is the capital of France?",
        "Tell me a joke.",
        "Book it for two people",
        # Ending on a word that often leaves a clause open, but here closes it.
        "Stop, please, and tell me what time it is.",
        "I know where you are",
        "How old you are!",
        "Here it is.",
        "How are you?",
        "Who are you",
        "Thank you.",
        "Okay. See you",
    ],
)
def test_finished_utterances(text):
    assert not sounds_unfinished(text)


def test_questions_are_told_by_their_question_mark():
    assert is_question("How far away is the moon? ")
    assert is_question("I like it here. Is that odd?")
    assert not is_question("Tell me a joke.")
    assert not is_question("")


@pytest.mark.parametrize(
    "text",
    [
        "Who wrote Romeo and Juliet.",
        "what time is it",
        "Can you tell me the way to the station.",
        "I'm hungry. What should I cook tonight.",
        "Doesn't it rain there a lot",
    ],
)
def test_a_question_without_its_question_mark_is_still_a_question(text):
    assert is_question(text)


@pytest.mark.parametrize(
    "text",
    [
        "What a lovely day.",
        "What I want is a table for two.",
        "How nice of you!",
        "I wonder who wrote it.",
        "Where? I have no idea.",
        "Tell me a joke.",
    ],
)
def test_exclamations_clauses_and_statements_are_not_questions(text):
    assert not is_question(text)


@pytest.mark.parametrize(
    "text",
    [
        "Tell me a joke.",
        "Please explain how tides work",
        "Thanks. Give me another one.",
        "Stop, please, and tell me what time it is.",
        "Go on.",
    ],
)
def test_requests(text):
    assert is_request(text)


@pytest.mark.parametrize(
    "text", ["I'd like to book a table.", "Let me think.", "I told him a joke.", "", "Please."]
)
def test_not_requests(text):
    assert not is_request(text)


def test_question_openers_come_from_the_vocabulary():
    assert not is_question("Who wrote it.", Vocabulary(question_openers=frozenset()))
    assert is_question("Tell me a joke.", Vocabulary(question_openers=frozenset({"tell"})))
    assert not is_request("Tell me a joke.", Vocabulary(request_openers=frozenset()))


def test_word_list_settings_parse_like_transcripts():
    assert parse_word_list("Mm-hmm,  I SEE , ,yeah") == {"mm-hmm", "i see", "yeah"}
    assert parse_word_list("") == frozenset()
    entries = frozenset({"uh-huh", "i see", "it's"})
    assert parse_word_list(format_word_list(entries)) == entries


def test_vocabulary_replaces_the_default_lists():
    words_ = Vocabulary(
        backchannel_words=frozenset({"jawohl"}),
        backchannel_phrases=frozenset(),
        interruption_cues=frozenset({"halt"}),
    )
    assert is_backchannel("Jawohl.", words_) and not is_backchannel("Yeah.", words_)
    bot = "Let me tell you about the weather."
    assert judge_short_overlap("Halt!", bot, min_words=4, vocabulary=words_) is Overlap.INTERRUPTION
    assert judge_short_overlap("Stop.", bot, min_words=4, vocabulary=words_) is Overlap.BACKCHANNEL


def test_echo_share_is_the_threshold():
    bot = "okay so here is the plan"
    assert is_echo_of("here is my idea", bot, share=0.5)  # 2 of 4 words
    assert not is_echo_of("here is my idea", bot, share=0.6)


def test_segment_uses_its_speaking_rate_until_complete():
    segment = Segment("x" * 10, audio_secs=0.2, secs_per_char=0.1)
    assert segment.expected_secs == 1.0
    segment.complete = True
    assert segment.expected_secs == 0.2


def test_heard_prefix_keeps_whole_words_within_the_played_share():
    text = "The quick brown fox jumps over the lazy dog."
    assert heard_prefix(text, 0.0) == ""
    assert heard_prefix(text, 1.0) == text
    assert heard_prefix(text, 0.5) == "The quick brown fox"
    assert heard_prefix(text, 0.05) == ""  # not even "The" finished


def test_echo_level_needs_the_margin():
    assert is_echo_level(300.0, 3000.0, margin_db=10)  # -20 dB: echo
    assert not is_echo_level(2500.0, 3000.0, margin_db=10)  # user talking over the bot
    assert not is_echo_level(100.0, 0.0, margin_db=10)  # bot silent: nothing to compare


def test_playout_plays_chunks_back_to_back_from_their_arrival():
    p = Playout()
    assert p.release(0.04, 1000, now=10.0, segment=1) == 10.0
    assert p.release(0.04, 1000, now=10.0, segment=1) == pytest.approx(10.04)
    assert p.ahead(10.0) == pytest.approx(0.08)
    # After a pause in delivery, playback restarts when the next chunk arrives.
    assert p.release(0.04, 2000, now=11.0, segment=2) == 11.0
    assert p.level(10.9, 11.01) == 2000
    assert p.level(10.2, 10.9) == 0.0


def test_playout_flush_drops_what_had_not_played():
    p = Playout()
    for _ in range(10):  # 0.4 s sent at once
        p.release(0.04, 1000, now=0.0, segment=7)
    p.flush(0.1)
    assert p.played_secs(7, now=5.0) == pytest.approx(0.1)
    assert p.ahead(0.1) == 0.0


def test_reply_heard_text_counts_whole_and_partial_sentences():
    p = Playout()
    reply = Reply(key="c", first_segment_id=0)
    reply.segments = [
        Segment("Paris is lovely.", audio_secs=1.0, complete=True),
        Segment("It has many museums and parks.", audio_secs=2.0, complete=True),
    ]
    p.release(1.0, 1000, now=0.0, segment=0)
    p.release(2.0, 1000, now=0.0, segment=1)
    assert reply.heard_text(p, now=0.4) == "Paris"
    assert reply.heard_text(p, now=2.0) == "Paris is lovely. It has many"
    assert reply.heard_text(p, now=9.0) == "Paris is lovely. It has many museums and parks."
