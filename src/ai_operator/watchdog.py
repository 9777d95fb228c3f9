"""Every turn gets an answer: a reply watchdog, and a deadline on each transcription.

A stage that raises, stalls or answers with nothing must not leave the user talking to
silence. `ReplyWatchdog` watches one session's frames: once the LLM has been asked to reply
it expects the bot's audio within `timeout_secs`. When a stage reports an error for that
reply, the reply comes back empty, or the time runs out, it calls `on_no_reply(stage,
cause)` once; the session then interrupts whatever is stuck, apologises out loud and tells
the client. A failed transcription is answered the same way ("say that again").

A stalled transcription is invisible in the frames (the user's turn simply never ends), so
`bound_transcription` gives each segmented transcription a deadline and turns a stall into
an error the watchdog sees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Literal

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    ErrorFrame,
    Frame,
    FunctionCallsStartedFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService

from ai_operator.errors import ProviderError

Stage = Literal["stt", "llm", "tts"]
Cause = Literal["error", "empty", "timeout"]
NoReply = Callable[[Stage, Cause], Awaitable[None]]

# A failing transcription is apologised for at most this often (noise can fail repeatedly).
STT_APOLOGY_INTERVAL_SECS = 5.0


def stage_of(processor: Any) -> Stage | None:
    """The stage a pipeline processor implements, if it is one of ours."""
    if isinstance(processor, STTService):
        return "stt"
    if isinstance(processor, LLMService):
        return "llm"
    if isinstance(processor, TTSService):
        return "tts"
    return None


class ReplyWatchdog(BaseObserver):
    """Calls `on_no_reply` when a reply the user is owed fails, comes back empty or is late.

    Armed by each `LLMContextFrame` (the LLM was asked to answer); disarmed by the bot's
    audio for it, or by the user starting a new turn. At most one call per armed reply.
    """

    def __init__(
        self,
        *,
        timeout_secs: float,
        on_no_reply: NoReply,
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        super().__init__(observe_every_push=False)
        self._timeout = timeout_secs
        self._on_no_reply = on_no_reply
        self._log = log
        self._timer: asyncio.TimerHandle | None = None
        self._firing: asyncio.Task[None] | None = None
        self._llm_text = False
        # What the armed reply got so far, for the log line of a late one.
        self._llm_chars = 0
        self._llm_ended = False
        self._tts_started = 0
        self._calls_functions = False
        self._last_stt_apology = -1e9
        self.fired = 0

    @property
    def armed(self) -> bool:
        return self._timer is not None

    async def on_push_frame(self, data: FramePushed) -> None:
        await self.observe(data.frame)

    async def observe(self, frame: Frame) -> None:
        """Update the watch with one frame; separate from the observer hook for tests."""
        if isinstance(frame, LLMContextFrame):
            self._arm()
        elif isinstance(frame, (UserStartedSpeakingFrame, BotStartedSpeakingFrame)):
            self._disarm()
        elif not self.armed:
            if isinstance(frame, ErrorFrame) and stage_of(frame.processor) == "stt":
                await self._stt_failed()
        elif isinstance(frame, TTSAudioRawFrame):
            self._disarm()
        elif isinstance(frame, LLMTextFrame):
            self._llm_chars += len(frame.text)
            self._llm_text = self._llm_text or bool(frame.text.strip())
        elif isinstance(frame, TTSStartedFrame):
            self._tts_started += 1
        elif isinstance(frame, FunctionCallsStartedFrame):
            self._calls_functions = True
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._llm_ended = True
            if not self._llm_text and not self._calls_functions:
                await self._fire("llm", "empty")
        elif isinstance(frame, ErrorFrame):
            stage = stage_of(frame.processor)
            if stage is not None:
                await self._fire(stage, "error")

    def close(self) -> None:
        """Stop watching (the session is over)."""
        self._disarm()
        if self._firing is not None:
            self._firing.cancel()

    def _arm(self) -> None:
        self._disarm()
        self._llm_text = False
        self._llm_chars, self._llm_ended, self._tts_started = 0, False, 0
        self._calls_functions = False
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        stage: Stage = "tts" if self._llm_text else "llm"
        detail = (
            f"the LLM's reply: {self._llm_chars} characters, "
            f"{'finished' if self._llm_ended else 'unfinished'}; "
            f"the TTS started {self._tts_started} phrase(s)"
        )
        self._firing = asyncio.get_running_loop().create_task(self._call(stage, "timeout", detail))

    async def _fire(self, stage: Stage, cause: Cause) -> None:
        self._disarm()
        await self._call(stage, cause)

    async def _stt_failed(self) -> None:
        now = time.monotonic()
        if now - self._last_stt_apology >= STT_APOLOGY_INTERVAL_SECS:
            self._last_stt_apology = now
            await self._call("stt", "error")

    async def _call(self, stage: Stage, cause: Cause, detail: str = "") -> None:
        self.fired += 1
        self._log.warning(
            "no reply: %s %s; apologising%s", stage, cause, f" ({detail})" if detail else ""
        )
        await self._on_no_reply(stage, cause)


def bound_transcription(stt: Any, deadline_secs: float) -> None:
    """Make each transcription of a segmented STT service fail after `deadline_secs`.

    Segments are transcribed one after another, so one stalled transcription would
    silence every later turn of the session; past the deadline it is cancelled and
    reported as a retryable ProviderError (an ErrorFrame the watchdog answers).
    Streaming STT services are left alone: their results are not tied to a call.
    """
    if not isinstance(stt, SegmentedSTTService):
        return
    run_stt = stt.run_stt

    async def run_stt_with_deadline(audio: bytes) -> AsyncGenerator[Frame | None, None]:
        chunks = run_stt(audio)
        try:
            while True:
                try:
                    async with asyncio.timeout(deadline_secs):
                        frame = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise ProviderError(
                        "stt",
                        type(stt).__name__,
                        f"no transcript after {deadline_secs:.0f} s",
                        retryable=True,
                    ) from exc
                yield frame
        finally:
            await chunks.aclose()

    stt.run_stt = run_stt_with_deadline  # type: ignore[method-assign]
