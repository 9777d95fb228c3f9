"""The LLM stage's failover journal with answers started ahead of the end of the turn."""

from __future__ import annotations

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    LLMContextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection

from ai_operator.providers.failover import LlmJournal

DOWN = FrameDirection.DOWNSTREAM


def speculative_request(journal: LlmJournal) -> LLMContextFrame:
    journal.record_input(UserStartedSpeakingFrame(), DOWN)
    request = LLMContextFrame(context=LLMContext(), speculation=True)
    journal.record_input(request, DOWN)
    return request


def test_a_confirmed_early_request_is_replayed_as_an_ordinary_one():
    journal = LlmJournal()
    request = speculative_request(journal)
    journal.record_input(UserStoppedSpeakingFrame(), DOWN)
    [(replayed, _)] = journal.replay()
    assert isinstance(replayed, LLMContextFrame)
    assert replayed.context is request.context
    assert not replayed.speculation  # the backup never saw the turn end that released it
    assert request.speculation  # the recorded frame is left as it was


def test_an_early_request_still_awaiting_its_turn_end_stays_speculative():
    journal = LlmJournal()
    speculative_request(journal)
    [(replayed, _)] = journal.replay()
    assert isinstance(replayed, LLMContextFrame) and replayed.speculation


def test_a_withdrawn_early_request_is_not_replayed():
    journal = LlmJournal()
    speculative_request(journal)
    journal.record_input(EagerEndOfTurnCancelFrame(), DOWN)
    assert journal.replay() == []
    assert journal.idle()
