"""The seed system's cloud providers: Deepgram (STT), OpenAI (LLM), Cartesia (TTS).

Each factory builds Pipecat's own client for the provider, pointed at the configured base URL,
and adds the one thing a voice conversation needs that the client does not do by itself:
noticing, within `provider_timeout_secs`, a provider that has stopped answering. A stall is
reported as an error like any other, so failover (failover.py) can answer the turn locally.
With failover on, the factory returns the service wrapped with its local fallback.

Retries belong to failover, not to the clients: with failover on, the OpenAI client's own
retries are off; the Deepgram and Cartesia reconnect loops keep running in the background,
which is what lets failover go back to them later.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

try:
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient
    from pipecat.services.cartesia.tts import CartesiaTTSService
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.services.openai.llm import OpenAILLMService
except ImportError as exc:  # pipecat raises ImportError (not ModuleNotFoundError) for these
    raise ModuleNotFoundError(
        f"a cloud provider SDK is missing ({exc}): install them with "
        "`pip install -e '.[cloud]'` (or run `make run`, which installs everything)"
    ) from exc

from pipecat.frames.frames import ErrorFrame, Frame, VADUserStoppedSpeakingFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.utils.errors import ErrorCategory

from ai_operator.config import Settings
from ai_operator.providers import Resources
from ai_operator.providers.failover import FailoverPrimary, with_failover

OPENAI_PLACEHOLDER_KEY = "unused"  # OpenAI-compatible servers that take no key
# The OpenAI SDK's own default, kept when there is no local fallback to turn to instead.
OPENAI_CLIENT_RETRIES = 2


class StallWatchdog:
    """Notices a provider that has gone quiet: armed when an answer is due, cleared by any.

    When nothing arrives within `timeout` after `arm()`, the service reports a timeout error,
    which failover treats like any other retryable failure.
    """

    def __init__(self, service: Any, timeout: float, expected: str) -> None:
        self._service = service
        self._timeout = timeout
        self._expected = expected
        self._task: asyncio.Task[None] | None = None
        self._armed_at = 0.0
        self._heard_at = 0.0

    def arm(self) -> None:
        if self._task is not None and not self._task.done():
            return  # already waiting for an earlier answer
        self._armed_at = time.monotonic()
        self._task = self._service.create_task(self._expire(), "reply_watchdog")

    def heard(self) -> None:
        self._heard_at = time.monotonic()

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            await self._service.cancel_task(self._task)
        self._task = None

    async def _expire(self) -> None:
        await asyncio.sleep(self._timeout)
        if self._heard_at >= self._armed_at:
            return
        message = f"no {self._expected} within {self._timeout:g} s"
        await self._service.push_error(
            error_msg=message,
            exception=TimeoutError(message),
            category=ErrorCategory.CONNECTIVITY,
        )


# ----------------------------------------------------------------------------------------
# Deepgram
# ----------------------------------------------------------------------------------------


class WatchedDeepgramSTTService(FailoverPrimary, DeepgramSTTService):
    """Pipecat's Deepgram service with a bounded connect and a transcript watchdog.

    Pipecat waits at setup until the first connection settles, retrying refusals with 4-10 s
    of backoff; here setup waits at most `response_timeout` (or until the service reports a
    failure), so a dead Deepgram costs the session start at most that long. After the user
    stops speaking Deepgram answers the `Finalize` within a few hundred milliseconds; no
    message at all for `response_timeout` means the stream has stalled.
    """

    def __init__(self, *, response_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._response_timeout = response_timeout
        self._watchdog = StallWatchdog(self, response_timeout, "transcript from Deepgram")
        self._failed = asyncio.Event()
        self._connecting: asyncio.Task[None] | None = None

    async def push_error_frame(
        self, error: ErrorFrame, force_treat_as_permanent: bool = False
    ) -> None:
        self._failed.set()  # whoever handles it, setup need not wait for a connection now
        await super().push_error_frame(error, force_treat_as_permanent)

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        self._failed.clear()
        connecting = asyncio.ensure_future(super().setup(setup))
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            done, _ = await asyncio.wait(
                {connecting, failed},
                timeout=self._response_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:  # cancelled while setting up: leave nothing running
            connecting.cancel()
            raise
        finally:
            failed.cancel()
        if connecting in done:
            connecting.result()
            return
        self._connecting = connecting  # keeps connecting in the background
        if not self._failed.is_set():
            message = f"no connection to Deepgram within {self._response_timeout:g} s"
            await self.push_error(
                error_msg=message,
                exception=TimeoutError(message),
                category=ErrorCategory.CONNECTIVITY,
            )

    async def cleanup(self) -> None:
        await self._watchdog.stop()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        await super().cleanup()

    def can_take_work(self) -> bool:
        return self._connection is not None  # audio sent while reconnecting would be lost

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame) and self.is_usable:
            self._watchdog.arm()

    async def _on_message(self, message: Any) -> None:
        self._watchdog.heard()
        await super()._on_message(message)

    async def _on_error(self, error: Any) -> None:
        # The SDK reports a message it cannot parse as the JSON error itself.
        if isinstance(error, ValueError):
            reason = f"malformed message from Deepgram ({error})"
        else:
            reason = f"Deepgram connection error: {error}"
        exception = error if isinstance(error, Exception) else None
        await self.push_error(error_msg=reason, exception=exception)
        await self.stop_all_metrics()


def _connect_without_deflate(connect: Any) -> Any:
    """`connect` (the websockets client) with permessage-deflate off unless asked for."""
    if getattr(connect, "without_deflate", False):
        return connect

    def connect_plain(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("compression", None)
        return connect(*args, **kwargs)

    connect_plain.without_deflate = True  # type: ignore[attr-defined]
    return connect_plain


def _deepgram_sends_plain_frames() -> None:
    """Turn off the Deepgram SDK's WebSocket compression for live transcription.

    The SDK connects with the websockets library's default, permessage-deflate, and has no
    option for it. What it sends is raw 16-bit PCM, 50 frames a second per call, which
    deflate barely shrinks: in the capacity benchmark compressing it was ~12 % of the
    server's main thread. The SDK looks its `connect` up in its module each time it
    connects, so wrapping that name once changes every later connection.
    """
    import deepgram.listen.v1.client as listen_client

    listen_client.websockets_client_connect = _connect_without_deflate(  # type: ignore[attr-defined]
        listen_client.websockets_client_connect  # type: ignore[attr-defined]
    )


def deepgram_stt(settings: Settings, resources: Resources) -> Any:
    _deepgram_sends_plain_frames()
    key = settings.deepgram_api_key.get_secret_value() if settings.deepgram_api_key else ""
    service = WatchedDeepgramSTTService(
        api_key=key,
        base_url=settings.deepgram_base_url,
        response_timeout=settings.provider_timeout_secs,
        settings=DeepgramSTTService.Settings(
            model=settings.deepgram_model,
            language=settings.deepgram_language,
            interim_results=True,
            punctuate=True,
        ),
    )
    return with_failover("stt", "deepgram", service, settings, resources, secrets=[key])


# ----------------------------------------------------------------------------------------
# OpenAI (or any OpenAI-compatible server)
# ----------------------------------------------------------------------------------------


class BoundedOpenAILLMService(FailoverPrimary, OpenAILLMService):
    """Pipecat's OpenAI service with its HTTP client bounded by `response_timeout`.

    The timeout applies to connecting and to each read, so a server that accepts the request
    and then sends nothing (or stops mid-stream) fails within that time. With failover on,
    the client's own retries are off: a retried request would keep the user waiting while
    the local model could already be answering.
    """

    def __init__(self, *, response_timeout: float, max_retries: int, **kwargs: Any) -> None:
        # create_client() runs inside super().__init__(), so these must be set first.
        self._response_timeout = response_timeout
        self._max_retries = max_retries
        super().__init__(**kwargs)

    def create_client(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        default_headers: Any = None,
        **kwargs: Any,
    ) -> AsyncOpenAI:
        timeout = self._response_timeout  # connect, and each read of the stream
        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            default_headers=default_headers,
            max_retries=self._max_retries,
            timeout=timeout,
            http_client=DefaultAsyncHttpxClient(timeout=timeout),
        )


def openai_llm(settings: Settings, resources: Resources) -> Any:
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    service = BoundedOpenAILLMService(
        api_key=key or OPENAI_PLACEHOLDER_KEY,
        base_url=settings.openai_base_url,
        response_timeout=settings.provider_timeout_secs,
        max_retries=0 if settings.failover else OPENAI_CLIENT_RETRIES,
        settings=OpenAILLMService.Settings(
            model=settings.openai_model, system_instruction=settings.system_prompt
        ),
    )
    return with_failover("llm", "openai", service, settings, resources, secrets=[key])


# ----------------------------------------------------------------------------------------
# Cartesia
# ----------------------------------------------------------------------------------------


class WatchedCartesiaTTSService(FailoverPrimary, CartesiaTTSService):
    """Pipecat's Cartesia service with a bounded handshake and a first-audio watchdog.

    Cartesia answers each piece of text within a few hundred milliseconds; a connection that
    takes no text and sends nothing back for `response_timeout` has stalled. A message that
    is not Cartesia's JSON is reported as malformed (Pipecat would silently reconnect).
    """

    def __init__(self, *, response_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._response_timeout = response_timeout
        self._watchdog = StallWatchdog(self, response_timeout, "audio from Cartesia")

    async def _websocket_connect(self, uri: str, **kwargs: Any) -> Any:
        kwargs.setdefault("open_timeout", self._response_timeout)
        return await super()._websocket_connect(uri, **kwargs)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        async for frame in super().run_tts(text, context_id):
            yield frame
        self._watchdog.arm()

    async def append_to_audio_context(self, context_id: str | None, frame: Any) -> None:
        self._watchdog.heard()
        await super().append_to_audio_context(context_id, frame)

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        self._watchdog.heard()  # the answer is no longer wanted
        await super().on_audio_context_interrupted(context_id)

    async def _receive_messages(self) -> None:
        try:
            await super()._receive_messages()
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            await self.push_error(
                error_msg=f"malformed message from Cartesia ({exc!r})", exception=exc
            )
            raise

    async def cleanup(self) -> None:
        await self._watchdog.stop()
        await super().cleanup()


def cartesia_tts(settings: Settings, resources: Resources) -> Any:
    key = settings.cartesia_api_key.get_secret_value() if settings.cartesia_api_key else ""
    service = WatchedCartesiaTTSService(
        api_key=key,
        url=f"{settings.cartesia_base_url.rstrip('/')}/tts/websocket",
        response_timeout=settings.provider_timeout_secs,
        settings=CartesiaTTSService.Settings(
            model=settings.cartesia_model, voice=settings.cartesia_voice
        ),
    )
    return with_failover("tts", "cartesia", service, settings, resources, secrets=[key])
