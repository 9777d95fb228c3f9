"""A PipelineWorker whose observers are only told about the frames they read.

Pipecat's `WorkerObserver` queues every event to every observer, each on its own task:
every frame *processed* by every processor, and every push of a frame. A conversation has
about six observers (ours: reply watchdog, recorder, latency; Pipecat's: RTVI, turn
tracking, idle) and about fifteen processors, and the caller's microphone alone sends 50
frames a second, so one session made some 5,000 queue hand-offs a second that every
observer then ignored. Skipping them took the capacity benchmark's server from 67 % to
60 % of a core at 10 sessions.

`LeanWorkerObserver` skips, before queueing:

- "frame processed" events, for observers that do not override `on_process_frame` (none
  of this session's do);
- the caller's audio (`InputAudioRawFrame`): none of the observers reads it (RTVI only
  does to report user audio levels, which this server does not turn on);
- repeated pushes of other audio frames: the observers that read bot audio (watchdog,
  latency) observe first pushes only, and RTVI skips audio.

Everything else reaches every observer exactly as before.
"""

from __future__ import annotations

import functools
from typing import Any

from pipecat.frames.frames import AudioRawFrame, InputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver


@functools.cache
def reads_processed_frames(observer_type: type[BaseObserver]) -> bool:
    """Whether observers of this class override `on_process_frame` (asked per frame, so
    answered once per class)."""
    return observer_type.on_process_frame is not BaseObserver.on_process_frame


def observers_need(frame: Any, *, first_push: bool) -> bool:
    """Whether any observer of a session reads this push of `frame`."""
    if isinstance(frame, InputAudioRawFrame):
        return False
    return first_push or not isinstance(frame, AudioRawFrame)


class LeanWorkerObserver(WorkerObserver):
    """`WorkerObserver` that drops, before queueing, events no observer reads."""

    async def on_process_frame(self, data: FrameProcessed) -> None:
        for proxy in (self._proxies or {}).values():
            if reads_processed_frames(type(proxy.observer)):
                await proxy.queue.put(data)

    async def on_push_frame(self, data: FramePushed) -> None:
        first_push = data.frame.id not in self._frames_pushed
        if observers_need(data.frame, first_push=first_push):
            await super().on_push_frame(data)


class LeanPipelineWorker(PipelineWorker):
    """`PipelineWorker` with a `LeanWorkerObserver` in front of its observers.

    The worker adds its own observers (RTVI, turn tracking, idle) to the list it is given
    while it is built, so the lean observer is put in place afterwards, over that list.
    """

    def __init__(self, *args: Any, observers: list[BaseObserver], **kwargs: Any) -> None:
        super().__init__(*args, observers=observers, **kwargs)
        self._observer = LeanWorkerObserver(observers=observers)
