"""The end-of-turn strategy on scripted timelines: waiting out unfinished utterances, and
answering ahead of the end of the turn.

`PatientTurnStopStrategy` is driven frame by frame with a simulated VAD, around a stand-in
for Smart Turn's strategy that ends the turn when told to. Times are seconds of input audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EagerTranscriptionFrame,
    Frame,
    InputAudioRawFrame,
    MetricsFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.metrics.metrics import TurnMetricsData
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop.base_user_turn_stop_strategy import BaseUserTurnStopStrategy
from tests.unit.timeline import FRAME, SILENCE, START_SECS, SimulatedVAD

from ai_operator.end_of_turn import PatientTurnStopStrategy
from ai_operator.turns import DEFAULT_VOCABULARY, Vocabulary

MAX_WAIT = 1.2


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


@pytest.mark.parametrize(
    "text",
    [
        "Who wrote Romeo and Juliet.",  # a question Whisper ended with a full stop
        "Tell me a fun fact about octopuses.",  # a request
    ],
)
async def test_questions_without_their_mark_and_requests_do_not_wait_as_statements(text):
    patient, inner, vad = await patient_call(statement_wait=0.9)
    await feed(patient, vad, 1.0, True)
    await feed(patient, vad, 0.2, False)
    await patient.process_frame(TranscriptionFrame(text, "", ""))
    assert inner.texts() == [text]


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


# --- answering ahead of the end of the turn ---------------------------------------------


@dataclass
class Turn:
    """A user turn in progress, with the user aggregator and turn controller around the
    strategy played by the test: `said` is the aggregation, `events` what reached Pipecat."""

    statement_wait: float = 0.0
    speculate: bool = True
    user_speaking: bool = False  # the controller refuses to end a turn while this is set
    said: list[str] = field(default_factory=list)
    events: list[tuple[str, object]] = field(default_factory=list)

    async def start(self) -> None:
        self.inner, self.vad = RecordingStop(), SimulatedVAD()

        async def answer_again() -> None:
            self.events.append(("answered again", None))

        self.patient = PatientTurnStopStrategy(
            self.inner,
            self.vad,  # type: ignore[arg-type]
            max_wait_secs=MAX_WAIT,
            statement_wait_secs=self.statement_wait,
            complete_probability=0.5,
            vocabulary=DEFAULT_VOCABULARY,
            turn_text=(lambda: " ".join(self.said)) if self.speculate else None,
            answer_again=answer_again,
        )

        async def inference(_s, speculation) -> None:
            self.events.append(("inference", speculation.text if speculation else None))

        async def withdrawn(_s) -> None:
            self.events.append(("withdrawn", None))

        async def stopped(_s, params) -> None:
            if self.user_speaking:
                return
            await self.patient.handle_user_turn_stopped()
            self.events.append(("stopped", "confirms" if params.confirms_speculation else ""))
            self.said.clear()

        self.patient.add_event_handler("on_user_turn_inference_triggered", inference)
        self.patient.add_event_handler("on_user_turn_speculation_cancelled", withdrawn)
        self.patient.add_event_handler("on_user_turn_stopped", stopped)
        await self.patient.handle_user_turn_started()

    async def audio(self, secs: float, *, voiced: bool) -> None:
        await feed(self.patient, self.vad, secs, voiced)

    async def words(self, text: str) -> None:
        self.said.append(text)  # the aggregator takes the words before the strategies
        await self.patient.process_frame(TranscriptionFrame(text, "", ""))

    async def pause_after(self, text: str) -> None:
        """A second of speech, then its transcript 0.3 s into the silence after it."""
        await self.audio(1.0, voiced=True)
        await self.audio(0.3, voiced=False)
        await self.words(text)

    async def resume(self) -> None:
        await self.audio(START_SECS, voiced=True)
        await self.patient.process_frame(VADUserStartedSpeakingFrame(start_secs=START_SECS))

    async def eager(self, text: str) -> None:
        """The early Whisper's transcript of the pause the VAD is still confirming."""
        await self.patient.process_frame(EagerTranscriptionFrame(text, "", ""))


async def test_a_question_is_answered_on_its_transcript_and_the_turn_end_confirms_it():
    turn = Turn()
    await turn.start()
    await turn.pause_after("What is the capital of France?")
    assert turn.events == [("inference", "What is the capital of France?")]
    await turn.inner.trigger_user_turn_stopped()  # Smart Turn: finished
    # No second inference: the turn end releases the answer already generated.
    assert turn.events[1:] == [("stopped", "confirms")]
    assert turn.patient.speculations == [("confirmed", "What is the capital of France?")]


async def test_a_statement_is_answered_while_the_turn_waits_for_more():
    turn = Turn(statement_wait=0.9)
    await turn.start()
    await turn.pause_after("I'd like to book a table.")
    assert turn.patient.held_transcript == "I'd like to book a table."
    assert turn.events == [("inference", "I'd like to book a table.")]  # at 0.3 s of silence
    await turn.audio(0.7, voiced=False)  # past the statement wait: handed on
    assert turn.inner.texts() == ["I'd like to book a table."]
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events[1:] == [("stopped", "confirms")]


async def test_the_user_going_on_withdraws_the_early_answer_and_the_next_pause_answers_all():
    turn = Turn(statement_wait=0.9)
    await turn.start()
    await turn.pause_after("I'd like to book a table.")
    await turn.resume()
    assert turn.events == [("inference", "I'd like to book a table."), ("withdrawn", None)]
    await turn.audio(0.6, voiced=True)
    await turn.audio(0.3, voiced=False)
    await turn.words("For two people tomorrow.")
    both = "I'd like to book a table. For two people tomorrow."
    assert turn.events[2:] == [("inference", both)]
    await turn.audio(1.0, voiced=False)
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events[3:] == [("stopped", "confirms")]
    assert turn.patient.speculations == [
        ("withdrawn", "I'd like to book a table."),
        ("confirmed", both),
    ]


async def test_a_turn_ending_on_other_words_is_answered_afresh():
    turn = Turn()
    await turn.start()
    await turn.pause_after("What time is it?")
    turn.said.append("In London.")  # words the strategy was not shown in a pause
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events == [
        ("inference", "What time is it?"),
        ("withdrawn", None),
        ("inference", None),  # an ordinary inference on the words as they now are
        ("stopped", ""),
    ]


async def test_a_turn_ended_by_the_stop_watchdog_withdraws_the_early_answer():
    turn = Turn()
    await turn.start()
    await turn.pause_after("Tell me a joke.")
    await turn.patient.handle_user_turn_stopped()  # the controller ended the turn itself
    assert turn.events == [("inference", "Tell me a joke."), ("withdrawn", None)]


async def test_an_answer_the_llm_withdrew_is_not_confirmed():
    """The speculative answer wanted a tool call, so the LLM service withdrew it: the turn
    end must run the inference again instead of releasing nothing."""
    turn = Turn()
    await turn.start()
    await turn.pause_after("What's the weather in Paris?")
    await turn.patient.process_frame(EagerEndOfTurnCancelFrame())
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events[1:] == [("inference", None), ("stopped", "")]


async def test_an_answer_the_llm_withdrew_after_the_turn_end_confirmed_it_is_redone():
    """The race: the turn ends on the speculated words (confirming the answer) while the
    LLM, reaching a tool call in that answer, withdraws it. The confirmation then releases
    nothing, so the conversation so far is answered again, once."""
    turn = Turn()
    await turn.start()
    await turn.pause_after("What time is it?")
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events[1:] == [("stopped", "confirms")]
    await turn.patient.process_frame(EagerEndOfTurnCancelFrame())  # the LLM's, arriving late
    assert turn.events[2:] == [("answered again", None)]
    await turn.patient.process_frame(EagerEndOfTurnCancelFrame())
    assert turn.events[2:] == [("answered again", None)]  # once
    assert turn.patient.speculations == [
        ("confirmed", "What time is it?"),
        ("answered again", "What time is it?"),
    ]
    # The next turn starts afresh: a withdrawal there is the ordinary kind.
    await turn.patient.handle_user_turn_started()
    await turn.pause_after("And the date?")
    await turn.patient.process_frame(EagerEndOfTurnCancelFrame())
    assert ("answered again", None) not in turn.events[3:]


async def test_a_confirmation_pipecat_refuses_keeps_the_answer_pending():
    """Pipecat never ends a turn while the user is speaking; the answer stays held."""
    turn = Turn(user_speaking=True)
    await turn.start()
    await turn.pause_after("Who are you?")
    await turn.inner.trigger_user_turn_stopped()
    assert turn.patient.speculation is not None
    turn.user_speaking = False
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events == [("inference", "Who are you?"), ("stopped", "confirms")]


async def test_words_while_the_user_speaks_start_nothing():
    turn = Turn()
    await turn.start()
    await turn.audio(1.0, voiced=True)
    await turn.words("What is")
    assert turn.events == []


async def test_without_speculation_the_llm_starts_at_the_turn_end():
    turn = Turn(speculate=False)
    await turn.start()
    await turn.pause_after("What is the capital of France?")
    assert turn.events == []
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events == [("inference", None), ("stopped", "")]


# --- answering on the early transcript, before the VAD's stop ---------------------------


async def test_an_eager_transcript_starts_the_answer_before_the_vad_stop():
    turn = Turn()
    await turn.start()
    await turn.audio(1.0, voiced=True)
    await turn.audio(0.1, voiced=False)  # the VAD is stopping (its stop comes at 0.2 s)
    assert turn.vad.latest_state is VADState.STOPPING
    await turn.eager("What is the capital of France?")
    assert turn.events == [("inference", "What is the capital of France?")]
    await turn.audio(0.2, voiced=False)  # the stop; the final transcript is the same words
    await turn.words("What is the capital of France?")
    assert turn.events == [("inference", "What is the capital of France?")]  # no second one
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events[1:] == [("stopped", "confirms")]
    assert turn.patient.speculations == [("confirmed", "What is the capital of France?")]


async def test_an_eager_transcript_adds_to_the_words_of_earlier_segments():
    turn = Turn(statement_wait=0.9)
    await turn.start()
    await turn.pause_after("I'd like to book a table.")
    await turn.resume()
    await turn.audio(0.6, voiced=True)
    await turn.audio(0.1, voiced=False)
    await turn.eager("For two people.")
    both = "I'd like to book a table. For two people."
    assert turn.events[-1] == ("inference", both)


async def test_speech_after_an_eager_transcript_withdraws_its_answer():
    """'What is the capital' ... 'of France?': the VAD never stopped, so the segment goes
    on; its final transcript answers afresh."""
    turn = Turn()
    await turn.start()
    await turn.audio(1.0, voiced=True)
    await turn.audio(0.1, voiced=False)
    await turn.eager("What is the capital")
    await turn.audio(0.06, voiced=True)  # SPEAKING again, without a VAD start
    assert turn.events == [("inference", "What is the capital"), ("withdrawn", None)]
    await turn.audio(0.5, voiced=True)
    await turn.audio(0.3, voiced=False)
    await turn.words("What is the capital of France?")
    assert turn.events[2:] == [("inference", "What is the capital of France?")]
    assert turn.patient.speculations == [("withdrawn", "What is the capital")]


async def test_a_late_eager_transcript_is_ignored():
    """Past the VAD's stop the final transcript is on its way: it decides, not the eager one."""
    turn = Turn()
    await turn.start()
    await turn.audio(1.0, voiced=True)
    await turn.audio(0.3, voiced=False)
    assert turn.vad.latest_state is VADState.QUIET
    await turn.eager("What is the capital of France?")
    assert turn.events == []
    await turn.audio(1.0, voiced=True)  # and while the user speaks, nothing either
    await turn.eager("What is the capital of France?")
    assert turn.events == []


async def test_an_eager_transcript_differing_from_the_final_one_is_withdrawn():
    turn = Turn()
    await turn.start()
    await turn.audio(1.0, voiced=True)
    await turn.audio(0.1, voiced=False)
    await turn.eager("What is the capital of France")
    await turn.audio(0.2, voiced=False)
    await turn.words("What is the capital of France? Paris")
    assert turn.events == [
        ("inference", "What is the capital of France"),
        ("withdrawn", None),
        ("inference", "What is the capital of France? Paris"),
    ]


async def test_an_answer_withdrawn_while_the_turn_end_is_confirming_it_is_redone():
    """The same race, the LLM's withdrawal arriving while Pipecat is still being told of
    the confirming turn end."""
    turn = Turn()
    await turn.start()
    await turn.pause_after("What time is it?")

    async def llm_withdraws_meanwhile(_s, _params) -> None:
        await turn.patient.process_frame(EagerEndOfTurnCancelFrame())

    turn.patient.add_event_handler("on_user_turn_stopped", llm_withdraws_meanwhile)
    await turn.inner.trigger_user_turn_stopped()
    assert turn.events[1:] == [("stopped", "confirms"), ("answered again", None)]


async def test_a_withdrawal_while_pipecat_keeps_the_turn_open_is_an_ordinary_one():
    turn = Turn(user_speaking=True)
    await turn.start()
    await turn.pause_after("Who are you?")

    async def llm_withdraws_meanwhile(_s, _params) -> None:
        await turn.patient.process_frame(EagerEndOfTurnCancelFrame())

    turn.patient.add_event_handler("on_user_turn_stopped", llm_withdraws_meanwhile)
    await turn.inner.trigger_user_turn_stopped()  # refused: the user is speaking
    assert turn.patient.speculation is None  # nothing pending: the end answers afresh
    assert ("answered again", None) not in turn.events
