"""Barge-in and end-of-turn strategies on scripted timelines.

The strategies are driven directly, frame by frame, with a simulated VAD: 20 ms audio
frames at known times, speech on or off, transcripts at chosen moments. Times below are
seconds of input audio, the strategies' own clock, so the tests assert *when* the bot
paused, resumed or was interrupted without sleeping.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    MetricsFrame,
    TranscriptionFrame,
    UserBackchannelFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop.base_user_turn_stop_strategy import BaseUserTurnStopStrategy

from ai_operator.barge_in import (
    BargeInRules,
    BargeInStrategy,
    OverlapState,
    PatientTurnStopStrategy,
)
from ai_operator.floor import BotFloor
from ai_operator.turns import DEFAULT_VOCABULARY, Overlap, Vocabulary

FRAME = 0.02
START_SECS = 0.2
STOP_SECS = 0.2
BACKCHANNEL_MAX = 0.7
VERDICT_TIMEOUT = 1.5
DECISION_MARGIN = 0.05
CONTINUATION = 0.6
MAX_WAIT = 1.2
SILENCE = bytes(640)
RULES = BargeInRules(
    backchannel_max_secs=BACKCHANNEL_MAX,
    min_words=4,
    verdict_timeout_secs=VERDICT_TIMEOUT,
    decision_margin_secs=DECISION_MARGIN,
    continuation_secs=CONTINUATION,
    echo_share=0.6,
    vocabulary=DEFAULT_VOCABULARY,
)


class SimulatedVAD:
    """Counts speech/silence frames like Pipecat's VADAnalyzer (start_secs / stop_secs)."""

    def __init__(self) -> None:
        self.params = VADParams(start_secs=START_SECS, stop_secs=STOP_SECS)
        self.latest_state = VADState.QUIET
        self._run = 0

    def feed(self, voiced: bool) -> None:
        state = self.latest_state
        if voiced:
            if state in (VADState.QUIET, VADState.STARTING):
                self._run = self._run + 1 if state is VADState.STARTING else 1
                done = self._run * FRAME >= START_SECS - 1e-9
                self.latest_state = VADState.SPEAKING if done else VADState.STARTING
            else:
                self.latest_state = VADState.SPEAKING
        elif state in (VADState.SPEAKING, VADState.STOPPING):
            self._run = self._run + 1 if state is VADState.STOPPING else 1
            done = self._run * FRAME >= STOP_SECS - 1e-9
            self.latest_state = VADState.QUIET if done else VADState.STOPPING
        else:
            self.latest_state = VADState.QUIET


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
    await call.audio(0.4, voiced=False)
    await call.words("Mm-hmm.")
    await call.audio(2.0, voiced=False)
    assert call.when("pause") == [1.2]
    assert call.when("resume") == [1.6, 1.8]  # at the VAD stop, again after the verdict
    assert call.when("turn") == []
    assert call.when("reset") == [1.8]  # the words leave the user aggregation
    assert [f.text for f in call.pushed if isinstance(f, UserBackchannelFrame)] == ["Mm-hmm."]
    assert call.strategy.outcomes == [(Overlap.BACKCHANNEL, "Mm-hmm.")]


async def test_short_command_interrupts_when_its_words_arrive():
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)  # "Stop."
    await call.audio(0.5, voiced=False)
    assert call.when("turn") == []  # bot resumed at the VAD stop: could be "yeah"
    await call.words("Stop.")
    assert call.when("turn") == [1.9]


async def test_pause_between_words_is_one_overlap():
    call = Call()
    await call.audio(1.0, voiced=False)
    await call.audio(0.4, voiced=True)  # "Wait,"
    await call.audio(0.4, voiced=False)  # comma pause; VAD stops at 1.6
    await call.audio(1.0, voiced=True)  # "I have a question", onset 1.8
    assert call.when("pause") == [1.2, 2.0]
    assert call.when("resume") == [1.6]
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


class RecordingStop(BaseUserTurnStopStrategy):
    """Stands in for Smart Turn's strategy: records what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Frame] = []

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if not isinstance(frame, InputAudioRawFrame):
            self.seen.append(frame)
        return ProcessFrameResult.CONTINUE

    async def verdict(self, probability: float) -> None:
        """Report a Smart Turn result, as the real strategy does after each VAD stop."""
        data = TurnMetricsData(
            processor="smart-turn",
            is_complete=probability > 0.5,
            probability=probability,
            e2e_processing_time_ms=40.0,
        )
        await self.push_frame(MetricsFrame(data=[data]))

    def texts(self) -> list[str]:
        return [f.text for f in self.seen if isinstance(f, TranscriptionFrame)]


async def patient_call(
    *,
    complete_probability: float = 0.5,
    statement_wait: float = 0.0,
    vocabulary: Vocabulary = DEFAULT_VOCABULARY,
) -> tuple[PatientTurnStopStrategy, RecordingStop, SimulatedVAD]:
    inner, vad = RecordingStop(), SimulatedVAD()
    patient = PatientTurnStopStrategy(
        inner,
        vad,  # type: ignore[arg-type]
        max_wait_secs=MAX_WAIT,
        statement_wait_secs=statement_wait,
        complete_probability=complete_probability,
        vocabulary=vocabulary,
    )
    return patient, inner, vad


async def feed(strategy: PatientTurnStopStrategy, vad: SimulatedVAD, secs: float, voiced: bool):
    for _ in range(round(secs / FRAME)):
        vad.feed(voiced)
        await strategy.process_frame(InputAudioRawFrame(SILENCE, 16000, 1))


async def test_unfinished_utterance_is_held_until_the_silence_is_long():
    patient, inner, vad = await patient_call()
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.5, False)  # speech ended at 1.0 (VAD stop at 1.2)
    await patient.process_frame(TranscriptionFrame("I'd like to book a table for", "", ""))
    assert patient.held_transcript == "I'd like to book a table for"
    await feed(patient, vad, 0.6, False)  # 1.1 s of silence: keep waiting
    assert not any(isinstance(f, TranscriptionFrame) for f in inner.seen)
    await feed(patient, vad, 0.2, False)  # 1.3 s: hand it on, Smart Turn ends the turn
    assert [f.text for f in inner.seen if isinstance(f, TranscriptionFrame)] == [
        "I'd like to book a table for"
    ]


async def test_unfinished_utterance_goes_on_as_text_so_far_when_the_user_resumes():
    patient, inner, vad = await patient_call()
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.5, False)
    held = TranscriptionFrame("My name is", "", "", finalized=True)
    await patient.process_frame(held)
    await feed(patient, vad, 0.4, True)
    await patient.process_frame(VADUserStartedSpeakingFrame(start_secs=START_SECS))
    texts = [f for f in inner.seen if isinstance(f, TranscriptionFrame)]
    assert [f.text for f in texts] == ["My name is"]
    assert not texts[0].finalized  # so Smart Turn waits for the rest
    assert isinstance(inner.seen[-2], VADUserStartedSpeakingFrame)  # after the VAD start


async def test_finished_utterance_passes_straight_through():
    patient, inner, vad = await patient_call()
    await feed(patient, vad, 0.5, False)
    await patient.process_frame(TranscriptionFrame("What is the capital of France?", "", ""))
    assert patient.held_transcript is None
    assert isinstance(inner.seen[-1], TranscriptionFrame)


async def test_unsure_smart_turn_holds_a_finished_sounding_transcript():
    """'I'd like to book a table.' with a middling Smart Turn score: wait for more."""
    patient, inner, vad = await patient_call(complete_probability=0.9)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.2, False)  # VAD stop at 1.2: Smart Turn is asked
    await inner.verdict(0.7)
    await feed(patient, vad, 0.3, False)
    await patient.process_frame(TranscriptionFrame("I'd like to book a table.", "", ""))
    assert patient.held_transcript == "I'd like to book a table."
    await feed(patient, vad, 0.6, False)  # 1.1 s of silence
    assert inner.texts() == []
    await feed(patient, vad, 0.2, False)  # past MAX_WAIT: the turn may end
    assert inner.texts() == ["I'd like to book a table."]


async def test_confident_smart_turn_lets_the_transcript_through():
    patient, inner, vad = await patient_call(complete_probability=0.9)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.2, False)
    await inner.verdict(0.97)
    await patient.process_frame(TranscriptionFrame("What is the capital of France?", "", ""))
    assert patient.held_transcript is None
    assert inner.texts() == ["What is the capital of France?"]


async def test_smart_turn_score_is_forgotten_when_the_user_goes_on():
    patient, inner, vad = await patient_call(complete_probability=0.9)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.2, False)
    await inner.verdict(0.3)
    assert patient.probability == 0.3
    await feed(patient, vad, 0.4, True)
    await patient.process_frame(VADUserStartedSpeakingFrame(start_secs=START_SECS))
    assert patient.probability is None
    await feed(patient, vad, 0.3, False)
    # No verdict yet for this pause: the words alone decide.
    await patient.process_frame(TranscriptionFrame("Tell me a joke.", "", ""))
    assert inner.texts() == ["Tell me a joke."]


async def test_unfinished_endings_come_from_the_vocabulary():
    words = Vocabulary(unfinished_endings=frozenset({"please"}))
    patient, inner, vad = await patient_call(vocabulary=words)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.3, False)
    await patient.process_frame(TranscriptionFrame("One more thing please", "", ""))
    assert patient.held_transcript == "One more thing please"
    await patient.process_frame(TranscriptionFrame("I'd like to book a table for", "", ""))
    assert inner.texts() == ["I'd like to book a table for"]  # "for" is not in this list


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


async def test_statement_waits_longer_than_a_question():
    """'I'd like to book a table.' may go on; 'What is the capital of France?' hands over."""
    patient, inner, vad = await patient_call(statement_wait=0.9)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.5, False)  # 0.5 s of silence
    await patient.process_frame(TranscriptionFrame("I'd like to book a table.", "", ""))
    assert patient.held_transcript == "I'd like to book a table."
    await feed(patient, vad, 0.3, False)  # 0.8 s
    assert inner.texts() == []
    await feed(patient, vad, 0.2, False)  # 1.0 s: past the statement wait
    assert inner.texts() == ["I'd like to book a table."]

    patient, inner, vad = await patient_call(statement_wait=0.9)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.5, False)
    await patient.process_frame(TranscriptionFrame("What is the capital of France?", "", ""))
    assert inner.texts() == ["What is the capital of France?"]


async def test_nothing_is_handed_on_while_speech_may_be_starting():
    """The user resumes just as the wait runs out: the VAD has heard speech, not yet
    `start_secs` of it, and the held words wait for its verdict."""
    patient, inner, vad = await patient_call(statement_wait=0.9)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.5, False)
    await patient.process_frame(TranscriptionFrame("I'd like to book a table.", "", ""))
    await feed(patient, vad, 0.36, False)  # 0.86 s of silence
    await feed(patient, vad, 0.1, True)  # speech resumes; the VAD is still STARTING
    assert inner.texts() == []
    await feed(patient, vad, 0.1, True)  # now SPEAKING: the start frame follows
    await patient.process_frame(VADUserStartedSpeakingFrame(start_secs=START_SECS))
    texts = [f for f in inner.seen if isinstance(f, TranscriptionFrame)]
    assert [f.text for f in texts] == ["I'd like to book a table."]
    assert not texts[0].finalized  # handed on as text so far: the turn goes on
