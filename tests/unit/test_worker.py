"""LeanPipelineWorker: observers get every frame they read, and no caller audio."""

from __future__ import annotations

import pipecat.tests.utils as pipecat_test_utils
import pytest
from pipecat.frames.frames import (
    InputAudioRawFrame,
    TextFrame,
    TTSAudioRawFrame,
)
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frameworks.rtvi.observer import RTVIObserver
from pipecat.tests.utils import run_test

from ai_operator.worker import LeanPipelineWorker, LeanWorkerObserver

SILENCE = b"\x00\x00" * 320


class PushLog(BaseObserver):
    """Every push it is told about, as (frame type, first push)."""

    def __init__(self, *, every_push: bool) -> None:
        super().__init__(observe_every_push=every_push)
        self.pushes: list[tuple[str, bool]] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        self.pushes.append((type(data.frame).__name__, data.first_push))

    def count(self, name: str) -> int:
        return sum(1 for kind, _ in self.pushes if kind == name)


class ProcessLog(PushLog):
    """Also reads "frame processed" events, so it must still get them."""

    def __init__(self) -> None:
        super().__init__(every_push=True)
        self.processed: list[str] = []

    async def on_process_frame(self, data: FrameProcessed) -> None:
        self.processed.append(type(data.frame).__name__)


@pytest.fixture
def lean_worker(monkeypatch):
    """run_test() builds its worker with ours."""
    monkeypatch.setattr(pipecat_test_utils, "PipelineWorker", LeanPipelineWorker)


async def test_observers_get_frames_but_not_the_callers_audio(lean_worker):
    every, first, processed = PushLog(every_push=True), PushLog(every_push=False), ProcessLog()
    # Two processors between run_test's source and sink, so a frame is pushed three times.
    pipeline = Pipeline([IdentityFilter(), IdentityFilter()])
    await run_test(
        pipeline,
        observers=[every, first, processed],
        frames_to_send=[
            InputAudioRawFrame(audio=SILENCE, sample_rate=16000, num_channels=1),
            TTSAudioRawFrame(audio=SILENCE, sample_rate=24000, num_channels=1, context_id="c"),
            TextFrame(text="hello"),
        ],
    )
    for log in (every, first, processed):
        assert log.count("EndFrame") >= 1, "the observer did not drain before the end"
        assert log.count("InputAudioRawFrame") == 0
        # Bot audio: its first push only, whoever asks for every push.
        assert log.pushes.count(("TTSAudioRawFrame", True)) == 1
        assert log.count("TTSAudioRawFrame") == 1
    # Other frames: every push for those that want them, the first for the rest.
    assert every.count("TextFrame") >= 3
    assert first.pushes.count(("TextFrame", True)) == 1 and first.count("TextFrame") == 1
    # "Frame processed" still reaches an observer that reads it, caller audio included.
    assert "TextFrame" in processed.processed and "InputAudioRawFrame" in processed.processed


async def test_pipecats_own_observers_sit_behind_the_lean_proxy():
    mine = PushLog(every_push=False)
    observers: list[BaseObserver] = [mine]
    worker = LeanPipelineWorker(Pipeline([IdentityFilter()]), observers=observers)
    proxy = worker._observer  # the proxy the worker hands its processors
    assert isinstance(proxy, LeanWorkerObserver)
    # The worker added its RTVI observer to the list; the lean proxy serves it too.
    assert any(isinstance(o, RTVIObserver) for o in observers)
    assert proxy._observers is observers
