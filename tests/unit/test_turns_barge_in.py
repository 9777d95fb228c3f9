"""The barge-in strategy on scripted timelines.

The strategy is driven directly, frame by frame, with a simulated VAD: 20 ms audio
frames at known times, speech on or off, transcripts at chosen moments. Times below are
seconds of input audio, the strategy's own clock, so the tests assert *when* the bot
paused, resumed or was interrupted without sleeping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    UserBackchannelFrame,
)
from tests.unit.timeline import FRAME, SILENCE, STOP_SECS, SimulatedVAD

from ai_operator.barge_in import BargeInRules, BargeInStrategy, OverlapState
from ai_operator.floor import BotFloor
from ai_operator.turns import DEFAULT_VOCABULARY, Overlap

BACKCHANNEL_MAX = 0.7
VERDICT_TIMEOUT = 1.5
DECISION_MARGIN = 0.05
CONTINUATION = 0.6
WORDS_WAIT = 0.2
RULES = BargeInRules(
    backchannel_max_secs=BACKCHANNEL_MAX,
    min_words=4,
    verdict_timeout_secs=VERDICT_TIMEOUT,
    decision_margin_secs=DECISION_MARGIN,
    continuation_secs=CONTINUATION,
    words_wait_secs=WORDS_WAIT,
    echo_share=0.6,
    vocabulary=DEFAULT_VOCABULARY,
)


@dataclass
class Call:
    """A strategy, its VAD and floor, and a log of what happened when."""

    bot_speaking: bool = True
    rules: BargeInRules = RULES
    t: float = 0.0
    vad: SimulatedVAD = field(default_factory=SimulatedVAD)
    log: list[tuple[float, str]] = field(default_factory=list)
    pushed: list[Frame] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.floor = BotFloor(
            lead_secs=0.1,
            grace_secs=0.3,
            recent_words=80,
            secs_per_char=0.075,
            clock=lambda: self.t,
        )
        if self.bot_speaking:
            self.floor.playout.release(60.0, 3000.0, 0.0)
        self.floor.pause = lambda: self.log.append((self.t, "pause"))  # type: ignore[method-assign]
        self.floor.resume = lambda: self.log.append((self.t, "resume"))  # type: ignore[method-assign]
        self.strategy = BargeInStrategy(self.floor, self.vad, self.rules)  # type: ignore[arg-type]

        async def started(_s, _params) -> None:
            self.log.append((self.t, "turn"))
            await self.strategy.handle_user_turn_started()

        async def reset(_s) -> None:
            self.log.append((self.t, "reset"))

        async def push(_s, frame, _direction) -> None:
            self.pushed.append(frame)

        self.strategy.add_event_handler("on_user_turn_started", started)
        self.strategy.add_event_handler("on_reset_aggregation", reset)
        self.strategy.add_event_handler("on_push_frame", push)

    async def audio(self, secs: float, *, voiced: bool) -> None:
        for _ in range(round(secs / FRAME)):
            self.t += FRAME
            self.vad.feed(voiced)
            await self.strategy.process_frame(InputAudioRawFrame(SILENCE, 16000, 1))

    async def words(self, text: str) -> None:
        await self.strategy.process_frame(TranscriptionFrame(text, "", ""))

    def when(self, what: str) -> list[float]:
        return [round(t, 2) for t, w in self.log if w == what]


async def test_bot_silent_speech_takes_the_floor_at_vad_start():
    call = Call(bot_speaking=False)
    await call.audio(1.0, voiced=False)
    await call.audio(0.6, voiced=True)  # onset at 1.0
    assert call.when("turn") == [1.2]
    assert call.when("pause") == []


async def test_talking_over_the_bot_pauses_it_at_onset_and_interrupts_when_long():
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(1.5, voiced=True)  # "Sorry to interrupt, I have a question"
    assert call.when("pause") == [1.2]  # silenced within start_secs of the onset
    # Still speaking past backchannel length (+ the VAD's stop delay): the user's turn.
    long = 1.0 + BACKCHANNEL_MAX + STOP_SECS + DECISION_MARGIN
    assert call.when("turn") == [pytest.approx(long, abs=0.03)]
    assert call.strategy.state is OverlapState.USER_TURN


async def test_backchannel_lets_the_bot_go_on_and_stays_out_of_the_context():
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)  # "Mm-hmm", onset 1.0, end 1.4
    await call.audio(0.3, voiced=False)  # the VAD stops at 1.6; the words come at 1.7
    await call.words("Mm-hmm.")
    await call.audio(2.0, voiced=False)
    assert call.when("pause") == [1.2]
    assert call.when("resume") == [1.7]  # as soon as the words say it was a backchannel
    assert call.when("turn") == []
    assert call.when("reset") == [1.7]  # the words leave the user aggregation
    assert [f.text for f in call.pushed if isinstance(f, UserBackchannelFrame)] == ["Mm-hmm."]
    assert call.strategy.outcomes == [(Overlap.BACKCHANNEL, "Mm-hmm.")]


async def test_short_command_interrupts_when_its_words_arrive():
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)  # "Stop."
    await call.audio(0.5, voiced=False)
    # The words are late: the bot went on WORDS_WAIT after the VAD stop (could be "yeah").
    assert call.when("resume") == [pytest.approx(1.6 + WORDS_WAIT, abs=0.01)]
    assert call.when("turn") == []
    await call.words("Stop.")
    assert call.when("turn") == [1.9]


async def test_a_short_command_with_prompt_words_stops_the_bot_without_resuming():
    """ "Excuse me," then a breath: the bot must not play on between the two."""
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(0.6, voiced=True)  # "Excuse me,", onset 1.0, end 1.6
    await call.audio(0.3, voiced=False)  # the VAD stops at 1.8, the words come at 1.9
    await call.words("Excuse me,")
    assert call.when("pause") == [1.2]
    assert call.when("resume") == []
    assert call.when("turn") == [1.9]


async def test_pause_between_words_is_one_overlap():
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)  # "Wait,"
    await call.audio(0.4, voiced=False)  # comma pause; VAD stops at 1.6
    await call.audio(1.0, voiced=True)  # "I have a question", onset 1.8
    assert call.when("pause") == [1.2, 2.0]
    assert call.when("resume") == [1.8]  # no words within WORDS_WAIT of the VAD stop
    # The overlap counts from its first onset, so it is long as soon as speech resumes.
    assert call.when("turn") == [2.0]


async def test_noise_without_words_lets_the_bot_go_on():
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(0.3, voiced=True)  # a cough
    await call.audio(2.0, voiced=False)  # no transcript ever comes
    assert call.when("turn") == []
    assert call.when("reset") == []
    assert call.strategy.state is OverlapState.LISTENING
    assert call.strategy.outcomes == [(Overlap.BACKCHANNEL, "")]


async def test_two_backchannels_a_moment_apart_are_two_overlaps():
    call = Call()
    await call.audio(1.0, voiced=False)
    for text in ("Yeah.", "Okay."):
        await call.audio(0.4, voiced=True)
        await call.audio(0.5, voiced=False)
        await call.words(text)
        await call.audio(1.0, voiced=False)
    assert call.when("turn") == []
    assert [v for v, _ in call.strategy.outcomes] == [Overlap.BACKCHANNEL, Overlap.BACKCHANNEL]


async def test_continuation_window_is_a_setting():
    """With no continuation window, speech after a short overlap is a new overlap."""
    rules = dataclasses.replace(RULES, continuation_secs=0.0)
    call = Call(rules=rules)
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)  # "Wait,"
    await call.audio(0.4, voiced=False)  # VAD stops at 1.6
    await call.audio(1.0, voiced=True)  # onset 1.8: a fresh overlap, measured from 1.8
    assert call.when("pause") == [1.2, 2.0]
    long = 1.8 + BACKCHANNEL_MAX + STOP_SECS + DECISION_MARGIN
    assert call.when("turn") == [pytest.approx(long, abs=0.03)]


async def test_custom_vocabulary_changes_what_interrupts():
    words = dataclasses.replace(DEFAULT_VOCABULARY, interruption_cues=frozenset({"banana"}))
    call = Call(rules=dataclasses.replace(RULES, vocabulary=words))
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)
    await call.audio(0.5, voiced=False)
    await call.words("Stop.")  # no longer a cue, and one word: a backchannel
    assert call.when("turn") == []
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)
    await call.audio(0.5, voiced=False)
    await call.words("Banana.")
    assert call.when("turn") == [pytest.approx(3.8, abs=0.03)]
