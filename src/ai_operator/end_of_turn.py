"""When the user's turn is over, and answering it before that is certain.

`PatientTurnStopStrategy` wraps Smart Turn's stop strategy: an utterance whose transcript
ends mid-sentence ("... a table for", "um,"), or that Smart Turn rates less likely finished
than `complete_probability`, is not answered until the user goes on or the silence reaches
`max_wait_secs`; a statement that sounds finished waits `statement_wait_secs`, a question
or a request ("Tell me a joke.") not at all. Smart Turn judges by prosody alone, and
synthetic or flat speech often sounds finished at every pause ("I'd like to book a table.
... For two.").

With `speculate` on, the LLM starts on the words as soon as the final transcript comes in
a pause, while Smart Turn and the waits above are still deciding (Pipecat's speculative
inference: the reply is generated against a provisional context and held in the LLM
service's `SpeculationGate`). The turn ending with the same words releases that reply, so
its first phrase is ready when the turn is committed; the user going on, or different
words by then, withdraws it and the LLM stops. The context only ever records the
committed words.

It can start sooner still: a local Whisper that transcribes early (providers/early_stt.py)
reports its transcript as an `EagerTranscriptionFrame` while the VAD is still confirming
the pause, and that starts the speculation before the VAD's stop; the final transcript at
the stop is the same words, so the turn ending confirms it. The VAD hearing speech again
withdraws it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

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
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop.base_user_turn_stop_strategy import (
    BaseUserTurnStopStrategy,
    UserTurnStoppedParams,
)

from ai_operator.barge_in import ObservedVAD, SpeechTracker
from ai_operator.turns import Vocabulary, is_question, is_request, sounds_unfinished

logger = logging.getLogger(__name__)


class PatientTurnStopStrategy(BaseUserTurnStopStrategy):
    """A stop strategy that waits out utterances which end mid-sentence.

    Every frame goes to `inner` (Smart Turn's strategy) except a final transcript that
    arrives while the user is silent and either `sounds_unfinished` or follows a Smart Turn
    probability of completion below `complete_probability` (held up to `max_wait_secs` of
    silence), or is a statement rather than a question (held up to `statement_wait_secs`).
    If the user speaks again, it is handed on (after the VAD start) as non-final text, so
    `inner` waits for the next segment's words; once the silence reaches the wait, it is
    handed on as it was and `inner` ends the turn as usual. Nothing is handed on while
    speech may be starting (the VAD has heard some, not yet `start_secs`).

    `inner` needs the transcript to end a turn, so holding it is enough to hold the turn.
    Smart Turn's probability is read from the metrics `inner` pushes after each pause.

    `turn_text` (given with `speculate`) returns what the user aggregator would write as the
    user's message now; a speculation is confirmed only if the turn ends on exactly that.

    `answer_again` runs the LLM on the conversation as it stands (the user aggregator's
    `push_context_frame`). It covers a race in Pipecat: a speculative answer that reaches a
    tool call is withdrawn by the LLM service (tools cannot be undone), and the turn's end
    is expected to answer afresh; but when that end had already confirmed the speculation,
    its confirmation finds nothing to release, and nobody answers.
    """

    _FORWARDED = ("on_push_frame", "on_broadcast_frame", "on_user_turn_speculation_cancelled")

    def __init__(
        self,
        inner: BaseUserTurnStopStrategy,
        vad: ObservedVAD,
        *,
        max_wait_secs: float,
        statement_wait_secs: float,
        complete_probability: float,
        vocabulary: Vocabulary,
        turn_text: Callable[[], str] | None = None,
        answer_again: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._vad = vad
        self._speech = SpeechTracker(vad)
        self._max_wait_secs = max_wait_secs
        self._statement_wait_secs = statement_wait_secs
        self._complete_probability = complete_probability
        self._vocabulary = vocabulary
        self._turn_text = turn_text
        self._answer_again = answer_again
        # The words of a speculation this turn's end confirmed, until the next turn starts.
        self._confirmed: str | None = None
        self._ending = False  # a confirming turn end is being handed to Pipecat
        self._withdrawn = False  # the LLM withdrew its answer meanwhile
        self._held: TranscriptionFrame | None = None
        self._hold_secs = 0.0  # silence after which the held transcript is handed on
        # Smart Turn's probability that the user finished, at the latest pause; None while
        # they speak or before its first verdict.
        self.probability: float | None = None
        self._in_turn = False
        self.speculation: UserTurnSpeculation | None = None  # in flight, unresolved
        self._eager = False  # the speculation rests on an eager transcript (before the stop)
        self._confirming = False  # `inner` ended the turn on the speculated words
        # (outcome, words) of every speculation, in order; read by tests and logs.
        self.speculations: list[tuple[str, str]] = []
        for event in self._FORWARDED:
            inner.add_event_handler(event, self._forwarder(event))
        inner.add_event_handler("on_push_frame", self._on_inner_push)
        inner.add_event_handler("on_user_turn_inference_triggered", self._on_inner_inference)
        inner.add_event_handler("on_user_turn_stopped", self._on_inner_stopped)

    def _forwarder(self, event: str) -> Any:
        async def forward(_inner: Any, *args: Any, **kwargs: Any) -> None:
            await self._call_event_handler(event, *args, **kwargs)

        return forward

    async def _on_inner_push(self, _inner: Any, frame: Frame, _direction: FrameDirection) -> None:
        if not isinstance(frame, MetricsFrame):
            return
        for data in frame.data:
            if isinstance(data, TurnMetricsData):
                self.probability = data.probability
                logger.debug(
                    "smart turn: %.2f likely finished (%.0f ms)",
                    data.probability,
                    data.e2e_processing_time_ms,
                )

    @property
    def held_transcript(self) -> str | None:
        return self._held.text if self._held else None

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        await self._inner.setup(setup)

    async def cleanup(self) -> None:
        self._held = None
        await self._inner.cleanup()
        await super().cleanup()

    async def handle_user_turn_started(self) -> None:
        self._held = None
        self.probability = None
        self._in_turn = True
        self._confirmed = None
        await self._withdraw("a new turn started")
        await self._inner.handle_user_turn_started()

    async def handle_user_turn_stopped(self) -> None:
        self._held = None
        self.probability = None
        self._in_turn = False
        # A turn ended some other way (Pipecat's stop watchdog) answers itself afresh.
        await self._withdraw("the turn ended without it")
        await self._inner.handle_user_turn_stopped()

    # --- speculation ---------------------------------------------------------------------

    async def _speculate(self, eager_text: str = "") -> None:
        """Answer the words so far (and `eager_text`, words not yet final), held until
        the turn ends on them."""
        if self._turn_text is None or not self._in_turn:
            return
        text = f"{self._turn_text()} {eager_text}".strip()
        if not text or (self.speculation is not None and same_words(self.speculation.text, text)):
            return
        await self._withdraw("more words came")
        self.speculation = UserTurnSpeculation(text=text)
        self._eager = bool(eager_text)
        logger.debug("answering ahead of the end of turn: %r", text)
        await self.trigger_user_turn_inference_triggered(speculation=self.speculation)

    async def _withdraw(self, why: str) -> None:
        speculation, self.speculation = self.speculation, None
        self._eager = False
        if speculation is None:
            return
        logger.debug("withdrawing the early answer to %r: %s", speculation.text, why)
        self.speculations.append(("withdrawn", speculation.text))
        await self.trigger_user_turn_speculation_cancelled()

    async def _on_inner_inference(self, _inner: Any, speculation: Any = None) -> None:
        if self.speculation is not None and self._turn_text is not None:
            if same_words(self.speculation.text, self._turn_text()):
                self._confirming = True  # the answer is already being generated
                return
            await self._withdraw("the turn ended on other words")
        await self._call_event_handler("on_user_turn_inference_triggered", speculation)

    async def _on_inner_stopped(self, _inner: Any, params: UserTurnStoppedParams) -> None:
        if not self._confirming:
            await self._call_event_handler("on_user_turn_stopped", params)
            return
        self._confirming = False
        speculation, self.speculation = self.speculation, None
        confirmed = dataclasses.replace(params, confirms_speculation=True)
        self._withdrawn = False
        self._ending = True  # a withdrawal meanwhile is the LLM's, racing this end
        try:
            await self._call_event_handler("on_user_turn_stopped", confirmed)
        finally:
            self._ending = False
        if self._in_turn:  # Pipecat kept the turn open (the user is speaking): still pending
            self.speculation = None if self._withdrawn else speculation
        elif speculation is not None:
            self.speculations.append(("confirmed", speculation.text))
            self._confirmed = speculation.text
            if self._withdrawn:
                await self._answer_confirmed_again()

    async def _answer_confirmed_again(self) -> None:
        text, self._confirmed = self._confirmed, None
        logger.debug("the LLM withdrew the confirmed answer to %r: answering again", text)
        self.speculations.append(("answered again", text or ""))
        if self._answer_again is not None:
            await self._answer_again()

    # --- frames --------------------------------------------------------------------------

    def _wait_for(self, text: str) -> tuple[float, str]:
        """How much silence a final transcript that came in a pause needs before the turn
        may end, and why."""
        if sounds_unfinished(text, self._vocabulary):
            return self._max_wait_secs, "it sounds unfinished"
        if self.probability is not None and self.probability < self._complete_probability:
            return self._max_wait_secs, f"smart turn is unsure ({self.probability:.2f})"
        if is_question(text, self._vocabulary):
            return 0.0, "a question"
        if is_request(text, self._vocabulary):
            return 0.0, "a request"
        return self._statement_wait_secs, "a statement may go on"

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            self._speech.on_audio(frame)
            if self._eager and self._vad.latest_state is VADState.SPEAKING:
                # Words came after an eager transcript, before the VAD's stop.
                await self._withdraw("the user goes on")
            result = await self._inner.process_frame(frame)
            if (
                self._held is not None
                and self._speech.quiet
                and self._speech.silence_secs >= self._hold_secs
            ):
                held, self._held = self._held, None
                logger.debug("no more words after %r: handing it on", held.text)
                await self._inner.process_frame(held)
            return result or ProcessFrameResult.CONTINUE
        if isinstance(frame, EagerTranscriptionFrame):
            # A transcript of the pause the VAD is still confirming: what the stop will
            # deliver unless the user goes on.
            if self._speech.speaking and self._vad.latest_state is VADState.STOPPING:
                await self._speculate(frame.text)
            return ProcessFrameResult.CONTINUE
        if isinstance(frame, EagerEndOfTurnCancelFrame):
            # The LLM withdrew it itself (it wanted to call a tool): answer afresh at the end.
            self.speculation = None
            self._eager = False
            if self._ending:
                self._withdrawn = True  # decided once the turn's end is through
            elif self._confirmed is not None and not self._in_turn:
                await self._answer_confirmed_again()  # the end came first and confirmed it
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self.probability = None
            await self._withdraw("the user goes on")
        if isinstance(frame, VADUserStartedSpeakingFrame) and self._held is not None:
            # The user goes on. `inner` first drops its end-of-turn verdict, then gets the
            # held words as text so far, not final, so it waits for the next segment's.
            held, self._held = self._held, None
            result = await self._inner.process_frame(frame)
            await self._inner.process_frame(
                TranscriptionFrame(held.text, held.user_id, held.timestamp, held.language)
            )
            return result or ProcessFrameResult.CONTINUE
        if isinstance(frame, TranscriptionFrame):
            self._eager = False  # final words: from here the speculation stands on them
        if isinstance(frame, TranscriptionFrame) and not self._speech.speaking:
            await self._speculate()
            wait, why = self._wait_for(frame.text)
            if self._speech.silence_secs < wait or not self._speech.quiet:
                logger.debug("waiting up to %.2f s after %r: %s", wait, frame.text, why)
                self._held, self._hold_secs = frame, wait
                return ProcessFrameResult.CONTINUE
        return await self._inner.process_frame(frame) or ProcessFrameResult.CONTINUE


def same_words(a: str, b: str) -> bool:
    """Whether two renderings of a user turn are the same text but for spacing."""
    return a.split() == b.split()
