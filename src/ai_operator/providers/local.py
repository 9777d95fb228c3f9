"""The embedded local providers as Pipecat services: faster-whisper (STT), llama.cpp (LLM)
and Piper (TTS), on the process-wide models of `local_models.py`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import numpy as np
from llama_cpp import Llama
from openai.types.chat import ChatCompletionChunk
from pipecat.frames.frames import (
    EagerTranscriptionFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
from pipecat.services.openai.base_llm import BaseOpenAILLMService
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from ai_operator.audio import EARLY_QUIET_SECS, trim_leading_silence
from ai_operator.config import Settings
from ai_operator.errors import ProviderError
from ai_operator.phrases import PhraseTextAggregator, ends_first_phrase
from ai_operator.providers.early_stt import EarlyTranscript, cut_short
from ai_operator.providers.local_models import LocalModels
from ai_operator.providers.whisper_window import SAMPLE_RATE as WHISPER_SAMPLE_RATE

logger = logging.getLogger(__name__)

# Audio kept from before the VAD's start, so a segment opens before the first word: the
# VAD starts `--vad-start-secs` into the speech and Silero lags ~60 ms (Pipecat keeps 1 s,
# which Whisper then has to encode and may hallucinate on).
WHISPER_PRE_ROLL_SECS = 0.5
# End of speech -> final transcript, p99, for Pipecat's turn-stop safety net: a 2-4 s
# utterance on 2 cores takes 0.4-0.6 s (bench.turn_taking).
WHISPER_TTFS_P99_SECS = 1.0

# ----------------------------------------------------------------------------------------
# STT: faster-whisper on the shared model
# ----------------------------------------------------------------------------------------


class LocalWhisperSTTService(WhisperSTTService):
    """Pipecat's segmented Whisper service, on the process-wide model and greedy decoding.

    Greedy decoding (beam 1) is as exact as beam 5 on short conversational turns with tiny.en
    and roughly halves the time to transcript. With `window="utterance"` the encoder sees
    only the turn's audio plus a second of silence (whisper_window.py): ~50 ms instead of
    ~300 ms for a 2 s question.
    """

    def __init__(self, *, models: LocalModels, window: str = "utterance", **kwargs: Any) -> None:
        self._shared = models
        self._windowed = window == "utterance"
        self._vad: Any = None  # the pipeline's VAD, once `follow_vad` is called
        self._eager = False
        self._early: EarlyTranscript | None = None  # set by `follow_vad`
        super().__init__(
            settings=WhisperSTTService.Settings(
                model=str(models.whisper_path), language=Language.EN
            ),
            # The windowed Whisper pads the speech itself (whisper_window.PAD_SECS), and the
            # 30 s path pads to 30 s: more silence only costs encoder time.
            trailing_silence_secs=0.0,
            # Each transcript is final, so the turn never waits on this safety net; set so
            # that Pipecat does not warn that it is unset in every conversation.
            ttfs_p99_latency=WHISPER_TTFS_P99_SECS,
            **kwargs,
        )

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        # Pipecat's name for the pre-roll it keeps while nobody speaks (1 s by default).
        self._audio_buffer_size_1s = int(self.sample_rate * WHISPER_PRE_ROLL_SECS) * 2

    def _load(self) -> None:
        self._model = self._shared.whisper

    def follow_vad(
        self, vad: Any, *, eager: bool = False, quiet_secs: float = EARLY_QUIET_SECS
    ) -> None:
        """Transcribe early (early_stt.py), reading the state of the pipeline's VAD, once it
        has heard `quiet_secs` of a pause; with `eager`, report each early transcript
        downstream as soon as it is done, as an `EagerTranscriptionFrame` (the turn's end
        predicted, not committed)."""
        self._vad = vad
        self._eager = eager
        self._early = EarlyTranscript(
            self._transcribe, quiet_secs=quiet_secs, on_ready=self._on_early_transcript
        )

    def _on_early_transcript(self, text: str) -> None:
        if self._eager:
            frame = EagerTranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
            self.create_task(self.push_frame(frame), f"{self}::eager_transcript")

    async def process_audio_frame(self, frame: InputAudioRawFrame, direction: FrameDirection):
        await super().process_audio_frame(frame, direction)
        if self._early is not None:
            self._early.on_audio(
                self._audio_buffer,
                self._vad.latest_state,
                speaking=self._user_speaking,
                frame_secs=frame.num_frames / frame.sample_rate,
            )

    async def _transcribe(self, audio: bytes) -> str:
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        whisper = self._shared.windowed_whisper

        def transcribe() -> str:
            started = time.perf_counter()
            result = (
                whisper.transcribe(samples) if self._windowed else whisper.transcribe_full(samples)
            )
            logger.debug(
                "whisper: %.2f s of audio in %.0f ms (%s): %r",
                len(samples) / WHISPER_SAMPLE_RATE,
                (time.perf_counter() - started) * 1000,
                result.path,
                result.text,
            )
            return result.text

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._shared.stt_executor, transcribe)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        early = self._early.take(audio) if self._early is not None else None
        if early is None:
            logger.debug("transcribing the segment afresh")
        else:
            state = "ready" if early.done() else "still running"
            logger.debug("the early transcript is the segment's (%s)", state)
        try:
            text = await (early if early is not None else self._transcribe(audio))
            if early is not None and cut_short(text):
                logger.debug("the early transcript %r may be cut short: transcribing again", text)
                text = await self._transcribe(audio)
        except RuntimeError as exc:  # executor shut down during server stop
            yield ErrorFrame(error=f"speech-to-text unavailable: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)


# ----------------------------------------------------------------------------------------
# LLM: llama.cpp, streamed as OpenAI chat-completion chunks
# ----------------------------------------------------------------------------------------

_END = object()
# Tokens kept free beyond the reply itself: the chat template's role markers.
CONTEXT_SLACK_TOKENS = 64


def fit_to_context(
    messages: list[dict[str, Any]], count_tokens: Callable[[str], int], budget: int
) -> list[dict[str, Any]]:
    """Drop the oldest turns (never the system prompt or the newest message) to fit `budget`.

    A long conversation would otherwise outgrow llama.cpp's context window, after which
    every turn fails. Forgetting the start of the conversation is the lesser evil.
    """

    def cost(message: dict[str, Any]) -> int:
        content = message.get("content")
        text = content if isinstance(content, str) else str(content or "")
        return count_tokens(text) + 4

    system = [m for m in messages if m.get("role") == "system"]
    rest = [m for m in messages if m.get("role") != "system"]
    total = sum(cost(m) for m in system) + sum(cost(m) for m in rest)
    if total <= budget:
        return messages
    while len(rest) > 1 and total > budget:
        total -= cost(rest.pop(0))
    # What is left must not open with the tail of a cut exchange (an orphaned reply).
    # Untrimmed, a conversation may well open with the bot: its greeting.
    while len(rest) > 1 and rest[0].get("role") == "assistant":
        rest.pop(0)
    return system + rest


# Stands for the next user message's words while the prompt before them is rendered.
_NEXT_WORDS = "\ue000"


def prime_next_user_turn(
    llama: Llama,
    messages: list[dict[str, Any]],
    *,
    give_way: Callable[[], bool] = lambda: False,
) -> int:
    """Evaluate, ahead of time, the prompt's opening of the next user message.

    After a reply, the next request's prompt is this conversation (`messages`, the reply
    included), then the chat template's opening of a user message (for SmolLM2, the
    reply's end-of-message token and "<|im_start|>user"), then the user's words and the
    assistant header.
    llama.cpp keeps the evaluated prefix of the last prompt, so evaluating the user header
    now, while the reply is being spoken, takes ~5 tokens (~40 ms on 2 cores) off the
    first token of the next answer. Returns the tokens evaluated: 0 when the cache does
    not hold this conversation up to there (another conversation's request came between,
    or the text differs from the tokens generated), as the next request then re-reads
    from where they differ anyway. It stops, between tokens, once `give_way()` is true
    (another generation is waiting for the model).
    """
    formatter = _chat_formatter(llama)
    if formatter is None:
        return 0
    rendered = formatter(messages=[*messages, {"role": "user", "content": _NEXT_WORDS}])
    prefix = rendered.prompt[: rendered.prompt.find(_NEXT_WORDS)]
    tokens = llama.tokenize(prefix.encode(), add_bos=not rendered.added_special, special=True)
    cached = llama.n_tokens
    if not 0 < cached < len(tokens) or tokens[:cached] != llama.input_ids[:cached].tolist():
        return 0
    read = 0
    for token in tokens[cached:]:
        if give_way():
            break
        # One at a time: llama.cpp reads a single token with its generation threads (1)
        # rather than its batch threads (2), leaving a core to Piper, which is usually
        # still synthesising the reply's later phrases.
        llama.eval([token])
        read += 1
    return read


@functools.cache
def _chat_formatter(llama: Llama) -> Any:
    """The Jinja chat template llama-cpp-python applies to this model, if it has one."""
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        return llama._model.token_get_text(token) if token != -1 else ""

    return Jinja2ChatFormatter(
        template=template, eos_token=text(llama.token_eos()), bos_token=text(llama.token_bos())
    )


def _delta_text(chunk: Any) -> str:
    """The text a streamed chat-completion chunk (a dict, from llama-cpp-python) adds."""
    return "".join(choice["delta"].get("content") or "" for choice in chunk["choices"])


class _LlamaStream:
    """Async iterator over llama.cpp chunks generated in the model's thread.

    `aclose()` (called by Pipecat when the turn is interrupted, via cancellation) sets a
    flag the generating thread checks between tokens, so the model stops within one token
    and the next session's request can start.
    """

    def __init__(
        self,
        models: LocalModels,
        request: dict[str, Any],
        *,
        yield_secs: float = 0.0,
    ) -> None:
        self._models = models
        self._request = request
        self._yield_secs = yield_secs
        self.primed_tokens = 0  # of the next user turn, read ahead after the reply
        self._stop = threading.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        models.llm_queue.submitted()
        self._future = self._loop.run_in_executor(models.llm_executor, self._generate)

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._stop.set()

    def _generate(self) -> None:
        self._models.llm_queue.started()
        try:
            if self._stop.is_set():
                return
            llama = self._models.llama
            budget = llama.n_ctx() - self._request["max_tokens"] - CONTEXT_SLACK_TOKENS
            self._request["messages"] = fit_to_context(
                self._request["messages"],
                lambda text: len(llama.tokenize(text.encode(), add_bos=False, special=True)),
                budget,
            )
            speech = self._models.speech
            first_phrase = self._yield_secs > 0  # still to be handed to Piper
            text, begun = "", None
            for chunk in llama.create_chat_completion(**self._request):
                if self._stop.is_set():
                    break
                self._put(chunk)
                text += _delta_text(chunk)
                if not first_phrase:
                    continue
                if begun is None:
                    if ends_first_phrase(text):
                        begun = speech.begun  # Piper's next phrase is this one
                elif speech.begun > begun:
                    # Piper has the first phrase: let it have the cores until it speaks.
                    speech.wait_until_voiced(self._yield_secs, self._stop)
                    first_phrase = False
            # Read before the end is put: the consumer may close the stream once it has
            # the last chunk, which sets the stop flag too.
            finished = not self._stop.is_set()
        except Exception as exc:  # llama.cpp raises plain ValueError/RuntimeError
            self._put(ProviderError("llm", "local", str(exc), retryable=False))
            return
        finally:
            self._put(_END)
        if finished and text.strip():
            self._read_ahead(text.strip())

    def _read_ahead(self, reply: str) -> None:
        """After a complete reply: `prime_next_user_turn`, which is an optimisation only
        (if it fails, the next request reads the whole prompt)."""
        messages = [*self._request["messages"], {"role": "assistant", "content": reply}]
        try:
            self.primed_tokens = prime_next_user_turn(
                self._models.llama, messages, give_way=self._models.llm_queue.busy
            )
        except Exception as exc:
            logger.warning("reading the next user turn ahead failed: %s", exc)
        logger.debug("llama.cpp read %d tokens of the next user turn", self.primed_tokens)

    def __aiter__(self) -> _LlamaStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        item = await self._queue.get()
        if item is _END:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return ChatCompletionChunk.model_validate(item)

    async def aclose(self) -> None:
        self._stop.set()


class LlamaCppLLMService(BaseOpenAILLMService):
    """llama.cpp in-process, speaking Pipecat's OpenAI LLM interface.

    Reusing the OpenAI service keeps context handling, metrics and function-call plumbing
    identical to the cloud path; only the transport (a thread instead of HTTP) differs.
    """

    def __init__(self, *, models: LocalModels, settings: Settings, **kwargs: Any) -> None:
        self._models = models
        self._yield_secs = settings.llm_yield_to_first_phrase_secs
        self._repeat_penalty = settings.llm_repeat_penalty
        super().__init__(
            settings=BaseOpenAILLMService.Settings(
                model=models.gguf_path.name,
                system_instruction=settings.system_prompt,
                temperature=settings.llm_temperature,
                max_tokens=settings.llm_max_tokens,
            ),
            **kwargs,
        )

    def create_client(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        return None

    async def get_chat_completions(self, context: LLMContext) -> Any:  # type: ignore[override]
        settings: Any = self._settings  # BaseOpenAILLMService.Settings
        params = await self.get_llm_adapter().get_llm_invocation_params(
            context,
            system_instruction=settings.system_instruction,
            convert_developer_to_user=True,
        )
        request = {
            "messages": list(params["messages"]),
            "stream": True,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "repeat_penalty": self._repeat_penalty,
            # llama-cpp-python derives each request's seed from the last one, so every
            # process would open its first conversation with the same draws (and SmolLM2
            # copies its own first reply's style: a "Bien sûr!" there made every answer
            # French-flavoured); each reply gets a fresh seed instead.
            "seed": random.getrandbits(32),
        }
        return _LlamaStream(self._models, request, yield_secs=self._yield_secs)


# ----------------------------------------------------------------------------------------
# TTS: Piper on the shared voice
# ----------------------------------------------------------------------------------------


class LocalPiperTTSService(TTSService):
    """Piper on the process-wide voice; audio streams out as each sentence is synthesised."""

    def __init__(self, *, models: LocalModels, **kwargs: Any) -> None:
        self._models = models
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=models.piper_path.stem, language=None),
            **kwargs,
        )
        # Speak each clause as soon as it is complete, not only whole sentences.
        self._text_aggregator = PhraseTextAggregator()
        self._last_context: str | None = None  # the reply whose phrases are being spoken

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        voice = self._models.piper
        executor = self._models.tts_executor
        loop = asyncio.get_running_loop()

        speech = self._models.speech
        # The reply's first phrase starts at its first sound (audio.trim_leading_silence);
        # later phrases keep their lead-in, part of the pause after the phrase before.
        first_phrase = context_id != self._last_context
        self._last_context = context_id

        async def chunks() -> AsyncIterator[bytes]:
            iterator = iter(voice.synthesize(text))
            speech.phrase_begun()
            voiced, trim = False, first_phrase
            try:
                while True:
                    chunk = await loop.run_in_executor(executor, next, iterator, None)
                    if not voiced:
                        voiced = True
                        speech.phrase_voiced()
                    if chunk is None:
                        return
                    audio = chunk.audio_int16_bytes
                    if trim:
                        trim = False
                        audio = trim_leading_silence(audio, voice.config.sample_rate)
                    yield audio
            finally:
                if not voiced:
                    speech.phrase_voiced()

        await self.start_tts_usage_metrics(text)
        try:
            async for frame in self._stream_audio_frames_from_iterator(
                chunks(), in_sample_rate=voice.config.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        finally:
            await self.stop_ttfb_metrics()
