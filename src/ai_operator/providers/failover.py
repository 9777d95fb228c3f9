"""Automatic failover from a cloud provider to the local one, stage by stage.

With failover on, a cloud stage is placed in the pipeline as a `FailoverSwitcher`: Pipecat's
`ServiceSwitcher` holding the cloud service (the primary) and the stage's local service (the
backup), with only the active one given work. When the primary reports an error (refused
connection, DNS failure, rejected key, 429, 5xx, timeout, malformed stream, or a stall noticed
by the watchdogs in cloud.py) the switcher, in this one place:

1. classifies it as `ProviderError` (permanent: 4xx other than 408/429; otherwise retryable),
2. routes the stage to the backup and replays the work that was in flight, recorded by the
   stage's journal (the user's unanswered speech, the pending LLM request, the unspoken
   reply), so the user hears an answer instead of silence,
3. tells the client (an RTVI `server-message` of type `provider-failover`) and the log,
   never quoting an API key,
4. after a retryable failure, gives the primary the next piece of work that starts once
   `failover_retry_secs` have passed and nothing is in flight (`provider-restored`); a
   permanent failure is final for the session, so a bad key is reported once, not retried.

The cloud services carry the `FailoverPrimary` mixin: the switcher hears of their errors
before anything else does (observers such as the session's reply watchdog, the pipeline),
and once out of use they send nothing more downstream. Every new session starts on the
cloud provider again.
"""

from __future__ import annotations

import dataclasses
import http
import logging
import time
from collections.abc import Iterable
from typing import Any

from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    FunctionCallsStartedFrame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputTransportMessageUrgentFrame,
    SystemFrame,
    TextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.llm_switcher import LLMSwitcher
from pipecat.pipeline.service_switcher import ServiceSwitcher, ServiceSwitcherStrategy
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.errors import (
    ErrorCategory,
    classify_http_exception,
    extract_http_status_code,
)
from pipecat.utils.security.redaction import redact_secrets

from ai_operator.config import Settings, env_var_name
from ai_operator.errors import ProviderError, http_status_retryable
from ai_operator.protocol import rtvi_server_message
from ai_operator.providers import Resources, Stage, factory

logger = logging.getLogger(__name__)

FAILOVER_NOTICE = "provider-failover"
RESTORED_NOTICE = "provider-restored"
FALLBACK_PROVIDER = "local"
# The setting holding each provider's key, named in the reason when the key is rejected.
KEY_SETTINGS = {
    "deepgram": "deepgram_api_key",
    "openai": "openai_api_key",
    "cartesia": "cartesia_api_key",
}
MAX_REASON_CHARS = 200
# Speech kept from before the VAD noticed the user (the VAD starts late by its start_secs).
PREROLL_SECS = 1.0
# Longest stretch of one user's unanswered speech kept for replay.
MAX_UTTERANCE_SECS = 30.0
# An utterance the primary has not answered for this long is given up on (it was noise).
PENDING_EXPIRY_SECS = 10.0


# ----------------------------------------------------------------------------------------
# Classifying a failure
# ----------------------------------------------------------------------------------------


def _root_detail(exc: BaseException) -> str:
    """The most specific message in an exception chain ('Connection refused', not 'error')."""
    detail = str(exc) or type(exc).__name__
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None:
        if str(cause):
            detail = str(cause)
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return detail


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__


class ProviderFailure(ProviderError):
    """A cloud stage's failure as failover reports it; `reason` is safe to show anyone."""

    def __init__(self, stage: str, provider: str, reason: str, *, retryable: bool) -> None:
        super().__init__(stage, provider, reason, retryable=retryable)
        self.reason = reason


def classify(
    stage: str,
    provider: str,
    error: ErrorFrame,
    secrets: Iterable[str] = (),
    *,
    given_up: bool = False,
) -> ProviderFailure:
    """Turn a Pipecat error frame into our typed error, with a reason safe to show anyone.

    `given_up`: the service itself has stopped trying, so the failure is final whatever its
    cause (Pipecat gives up on any 4xx handshake, and after three quick disconnections).
    """
    exc = error.exception
    status = extract_http_status_code(exc) if exc is not None else None
    if status is not None:
        retryable = http_status_retryable(status)
        try:
            reason = f"HTTP {status} {http.HTTPStatus(status).phrase}"
        except ValueError:
            reason = f"HTTP {status}"
        if status in (401, 403) and provider in KEY_SETTINGS:
            reason += f": the API key was rejected; check {env_var_name(KEY_SETTINGS[provider])}"
    else:
        category = error.category or (classify_http_exception(exc) if exc else None)
        retryable = not (category is not None and category.is_permanent)
        if exc is None:
            reason = error.error
        elif _is_timeout(exc):
            detail = str(exc)
            reason = "timed out" if "timed out" in detail.lower() else f"timed out ({detail})"
        elif isinstance(exc, ValueError) or "malformed" in error.error:
            reason = f"malformed response ({exc})"
        elif isinstance(exc, OSError) or "Connection" in type(exc).__name__:
            reason = f"connection failed ({_root_detail(exc)})"
        else:
            reason = error.error
    reason = redact_secrets(reason)
    for secret in secrets:
        if secret:
            reason = reason.replace(secret, "[REDACTED]")
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return ProviderFailure(stage, provider, reason, retryable=retryable and not given_up)


# ----------------------------------------------------------------------------------------
# Journals: what each stage would have to redo on its backup
# ----------------------------------------------------------------------------------------

Replay = list[tuple[Frame, FrameDirection]]


def fresh_copy(frame: Frame) -> Frame:
    """The same frame under a new id (Pipecat drops a frame id it has already seen)."""
    copy = dataclasses.replace(frame)
    for f in dataclasses.fields(frame):
        if not f.init and f.name not in ("id", "name"):
            setattr(copy, f.name, getattr(frame, f.name))
    return copy


class Journal:
    """Follows one stage's work in flight, in whichever service is active.

    `record_input` sees every frame entering the stage, `record_output` every frame the
    active service sends on. `replay()` is what the backup must be given to finish the work
    the failed primary left; `idle()` and `starts_work()` mark where switching back is safe.
    """

    # Whether the backup passes replayed frames on (they must then not leave the stage).
    replay_passes_through = False

    def record_input(self, frame: Frame, direction: FrameDirection) -> None:
        pass

    def record_output(self, frame: Frame) -> None:
        pass

    def replay(self) -> Replay:
        return []

    def reset(self) -> None:
        pass

    def idle(self) -> bool:
        return True

    def starts_work(self, frame: Frame) -> bool:
        return False


class SttJournal(Journal):
    """The user's speech that has no transcript yet, with a little audio from before it."""

    replay_passes_through = True

    def __init__(self) -> None:
        self._audio = bytearray()
        self._sample_rate = 16_000
        self._channels = 1
        self._speaking = False
        self._stopped_at: float | None = None  # VAD stop of an utterance not yet transcribed

    def _pending(self) -> bool:
        return (
            self._stopped_at is not None
            and time.monotonic() - self._stopped_at < PENDING_EXPIRY_SECS
        )

    def record_input(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioRawFrame) and direction is FrameDirection.DOWNSTREAM:
            self._sample_rate, self._channels = frame.sample_rate, frame.num_channels
            self._audio += frame.audio
            keep_secs = MAX_UTTERANCE_SECS if not self.idle() else PREROLL_SECS
            keep = int(keep_secs * self._sample_rate) * 2 * self._channels
            if len(self._audio) > keep:
                del self._audio[: len(self._audio) - keep]
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking = False
            self._stopped_at = time.monotonic()

    def record_output(self, frame: Frame) -> None:
        if isinstance(frame, TranscriptionFrame):
            self._audio.clear()  # transcribed: only what follows could still be lost
            self._stopped_at = None

    def replay(self) -> Replay:
        if self.idle() or not self._audio:
            return []
        frames: Replay = [(VADUserStartedSpeakingFrame(), FrameDirection.UPSTREAM)]
        frames.append(
            (
                InputAudioRawFrame(
                    audio=bytes(self._audio),
                    sample_rate=self._sample_rate,
                    num_channels=self._channels,
                ),
                FrameDirection.DOWNSTREAM,
            )
        )
        if not self._speaking:
            # stop_secs=0 tells the STT this stop is not a real one to time latency from.
            frames.append((VADUserStoppedSpeakingFrame(stop_secs=0.0), FrameDirection.UPSTREAM))
        return frames

    def reset(self) -> None:
        self._stopped_at = None
        self._audio.clear()

    def idle(self) -> bool:
        return not self._speaking and not self._pending()

    def starts_work(self, frame: Frame) -> bool:
        return isinstance(frame, InputAudioRawFrame)


class LlmJournal(Journal):
    """The request being answered, until its answer has started.

    A speculative request (end_of_turn.py) whose turn has since ended is replayed as an
    ordinary one: the backup never saw the turn end that released it, and would hold its
    answer for good. One still awaiting its turn's end is replayed as it is, and the turn
    end, reaching the backup now, releases it; one withdrawn is not replayed.
    """

    def __init__(self) -> None:
        self._pending: LLMContextFrame | None = None
        self._answered = False
        self._turn_ended = False

    def record_input(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, LLMContextFrame):
            self._pending, self._answered = frame, False
        elif isinstance(frame, InterruptionFrame):
            self._pending = None
        elif isinstance(frame, EagerEndOfTurnCancelFrame):
            if self._pending is not None and self._pending.speculation:
                self._pending = None
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._turn_ended = False
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._turn_ended = True

    def record_output(self, frame: Frame) -> None:
        if isinstance(frame, (LLMTextFrame, FunctionCallsStartedFrame)):
            self._answered = True
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._pending = None

    def replay(self) -> Replay:
        if self._pending is None or self._answered:
            return []  # an answer already under way is not started again from scratch
        request = fresh_copy(self._pending)
        assert isinstance(request, LLMContextFrame)
        request.speculation = request.speculation and not self._turn_ended
        return [(request, FrameDirection.DOWNSTREAM)]

    def reset(self) -> None:
        self._pending = None

    def idle(self) -> bool:
        return self._pending is None

    def starts_work(self, frame: Frame) -> bool:
        return isinstance(frame, LLMContextFrame)


class TtsJournal(Journal):
    """What was given to the speaker since it last finished, until its audio starts."""

    def __init__(self) -> None:
        self._frames: list[Frame] = []
        self._voiced = False

    def record_input(self, frame: Frame, direction: FrameDirection) -> None:
        if direction is not FrameDirection.DOWNSTREAM:
            return
        if isinstance(frame, InterruptionFrame):
            self.reset()
        elif isinstance(
            frame, (TTSSpeakFrame, LLMFullResponseStartFrame, LLMFullResponseEndFrame)
        ) or (
            isinstance(frame, TextFrame)
            and not isinstance(frame, (TranscriptionFrame, InterimTranscriptionFrame))
        ):
            self._frames.append(frame)

    def record_output(self, frame: Frame) -> None:
        if isinstance(frame, TTSAudioRawFrame):
            self._voiced = True
        elif isinstance(frame, TTSStoppedFrame):
            self.reset()

    def replay(self) -> Replay:
        if self._voiced:
            return []  # the user is hearing it: the rest is lost rather than repeated
        return [(fresh_copy(f), FrameDirection.DOWNSTREAM) for f in self._frames]

    def reset(self) -> None:
        self._frames.clear()
        self._voiced = False

    def idle(self) -> bool:
        return not self._frames

    def starts_work(self, frame: Frame) -> bool:
        return isinstance(frame, (LLMFullResponseStartFrame, TTSSpeakFrame))


JOURNALS: dict[str, type[Journal]] = {"stt": SttJournal, "llm": LlmJournal, "tts": TtsJournal}


# ----------------------------------------------------------------------------------------
# The switcher
# ----------------------------------------------------------------------------------------


class FailoverPrimary(FrameProcessor):
    """Mixed into a cloud service (ahead of its Pipecat class) that a FailoverSwitcher holds.

    The switcher hears of the service's errors before anything else does (observers, the
    pipeline), so an error it answers by failing over is not also treated as a failed turn.
    Once the service is out of use, what it still sends downstream (the end of a failed
    reply, a late transcript) and the errors of its background reconnects stop here.
    """

    failover: FailoverSwitcher | None = None

    def can_take_work(self) -> bool:
        """Whether work given to the service now would be done (e.g. it is connected)."""
        return True

    async def push_error_frame(
        self, error: ErrorFrame, force_treat_as_permanent: bool = False
    ) -> None:
        if self.failover is not None:
            error.processor = error.processor or self
            if await self.failover.claim_error(error, given_up=force_treat_as_permanent):
                return
        if force_treat_as_permanent:
            await super().push_error_frame(error, force_treat_as_permanent=True)
        else:
            await super().push_error_frame(error)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if (
            self.failover is not None
            and direction is FrameDirection.DOWNSTREAM
            and not self.failover.in_use(self)
            and not isinstance(frame, (SystemFrame, EndFrame))  # lifecycle frames pass
        ):
            return
        await super().push_frame(frame, direction)


class _FailoverStrategy(ServiceSwitcherStrategy):
    """Switches only when told to, by the FailoverSwitcher."""

    async def switch_to(self, service: FrameProcessor) -> FrameProcessor | None:
        return await self._set_active_if_available(service)


class FailoverSwitcher(ServiceSwitcher[_FailoverStrategy]):
    """A cloud service with its local fallback, switched on failure (see the module doc)."""

    def __init__(
        self,
        *,
        stage: Stage,
        provider: str,
        primary: FailoverPrimary,
        backup: FrameProcessor,
        journal: Journal,
        retry_after_secs: float,
        secrets: Iterable[str] = (),
    ) -> None:
        super().__init__([primary, backup], _FailoverStrategy)
        primary.failover = self
        self._stage = stage
        self._provider = provider
        self._primary = primary
        self._backup = backup
        self._journal = journal
        self._retry_after_secs = retry_after_secs
        self._secrets = [s for s in secrets if s]
        self._failure: ProviderFailure | None = None
        self._failed_at = 0.0
        self._echoes: set[int] = set()  # ids of replayed frames the backup passes on
        self.failovers = 0

    def in_use(self, service: FrameProcessor) -> bool:
        return self.strategy.active_service is service

    @property
    def using_fallback(self) -> bool:
        return self.in_use(self._backup)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if self._may_fail_back(frame):
            await self._fail_back()
        self._journal.record_input(frame, direction)
        await super().process_frame(frame, direction)

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        if frame.id in self._echoes:
            self._echoes.discard(frame.id)
            return
        if direction is FrameDirection.DOWNSTREAM:
            self._journal.record_output(frame)
        await super().push_frame(frame, direction)

    async def claim_error(self, error: ErrorFrame, *, given_up: bool) -> bool:
        """Called by the primary for each error it reports; True when this answers it.

        `given_up`: the service has stopped trying (Pipecat's own reconnect policy).
        """
        if not self.in_use(self._primary):
            await self._note_background_error(error, given_up=given_up)
            return True
        if error.category is ErrorCategory.APPLICATION:
            return False  # our own content was rejected: another provider would not help
        return await self._fail_over(error, given_up=given_up)

    async def _note_background_error(self, error: ErrorFrame, *, given_up: bool) -> None:
        """An error of the primary while out of use (its reconnects): final ones end failback."""
        failure = classify(self._stage, self._provider, error, self._secrets, given_up=given_up)
        if failure.retryable or not self._primary.is_usable:
            logger.debug("%s provider '%s' (out of use): %s", self._stage, self._provider, error)
            return
        logger.warning(
            "%s provider '%s' gave up reconnecting (%s); staying on the local %s",
            self._stage,
            self._provider,
            failure.reason,
            self._stage,
        )
        await self._primary.set_usable(False)

    async def _fail_over(self, error: ErrorFrame, *, given_up: bool) -> bool:
        failure = classify(self._stage, self._provider, error, self._secrets, given_up=given_up)
        replay = self._journal.replay()
        if await self.strategy.switch_to(self._backup) is None:
            return False
        self.failovers += 1
        self._failure, self._failed_at = failure, time.monotonic()
        if failure.retryable:
            logger.warning(
                "%s provider '%s' failed: %s; using the local %s, retrying the cloud after %g s",
                self._stage,
                self._provider,
                failure.reason,
                self._stage,
                self._retry_after_secs,
            )
        else:
            logger.error(
                "%s provider '%s' failed permanently: %s; using the local %s for the rest "
                "of the session",
                self._stage,
                self._provider,
                failure.reason,
                self._stage,
            )
            await self._primary.set_usable(False)
        await self._notify(
            {
                "type": FAILOVER_NOTICE,
                "stage": self._stage,
                "provider": self._provider,
                "fallback": FALLBACK_PROVIDER,
                "reason": failure.reason,
                "permanent": not failure.retryable,
                "retry_after_secs": self._retry_after_secs if failure.retryable else None,
            }
        )
        self._journal.reset()
        for frame, direction in replay:
            if self._journal.replay_passes_through:
                self._echoes.add(frame.id)
            await self.queue_frame(frame, direction)
        return True

    def _may_fail_back(self, frame: Frame) -> bool:
        return (
            self._failure is not None
            and self._failure.retryable
            and self.using_fallback
            and self._primary.is_usable
            and self._primary.can_take_work()
            and time.monotonic() - self._failed_at >= self._retry_after_secs
            and self._journal.starts_work(frame)
            and self._journal.idle()
        )

    async def _fail_back(self) -> None:
        if await self.strategy.switch_to(self._primary) is None:
            return
        self._failure = None
        logger.info("%s provider '%s': trying it again", self._stage, self._provider)
        await self._notify(
            {"type": RESTORED_NOTICE, "stage": self._stage, "provider": self._provider}
        )

    async def _notify(self, data: dict[str, Any]) -> None:
        message = rtvi_server_message(data)
        await self.push_frame(OutputTransportMessageUrgentFrame(message=message))


class LLMFailoverSwitcher(FailoverSwitcher, LLMSwitcher):  # type: ignore[misc]
    """The LLM stage's switcher: also keeps tools registered on both LLMs (LLMSwitcher)."""


def with_failover(
    stage: Stage,
    provider: str,
    primary: FailoverPrimary,
    settings: Settings,
    resources: Resources,
    *,
    secrets: Iterable[str] = (),
) -> FrameProcessor:
    """`primary` with its stage's local service as fallback, or alone if failover is off."""
    if not settings.failover or resources.local is None:
        return primary
    backup = factory(stage, FALLBACK_PROVIDER)(settings, resources)
    switcher_class = LLMFailoverSwitcher if stage == "llm" else FailoverSwitcher
    return switcher_class(
        stage=stage,
        provider=provider,
        primary=primary,
        backup=backup,
        journal=JOURNALS[stage](),
        retry_after_secs=settings.failover_retry_secs,
        secrets=secrets,
    )
