"""The embedded LLM: llama.cpp in-process, streamed as OpenAI chat-completion chunks on
the process-wide model of `local_models.py`, so Pipecat's OpenAI service handles context,
metrics and function calls as it does for the cloud path.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import llama_cpp
from llama_cpp import Llama
from openai.types.chat import ChatCompletionChunk
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.base_llm import BaseOpenAILLMService

from ai_operator.config import Settings
from ai_operator.errors import ProviderError
from ai_operator.openings import for_retry, opening_known, rejection
from ai_operator.phrases import ends_first_phrase
from ai_operator.providers.local_models import LocalModels, SpeechProgress

logger = logging.getLogger(__name__)

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


def _set_threads(llama: Llama, threads: int) -> None:
    """llama.cpp's generation threads from the next token on (prompt reading unchanged)."""
    llama_cpp.llama_set_n_threads(llama.ctx, threads, llama.n_threads_batch)


class _FirstPhrase:
    """A reply's first phrase gets the machine; the rest shares it.

    Until the text put so far completes the first phrase, llama.cpp generates with
    `threads` (nothing else runs then: the caller is silent and Piper is waiting for that
    phrase); from then on, with its configured generation threads. Once Piper has begun a
    phrase after that moment (the first one), generation waits until Piper voices it or
    `pause_secs` pass, so Piper has the cores; later phrases do not pause it (`pause_secs`
    of 0: never pauses).
    """

    def __init__(
        self,
        llama: Llama,
        speech: SpeechProgress,
        *,
        threads: int,
        pause_secs: float,
        stop: threading.Event,
    ) -> None:
        self._llama = llama
        self._speech = speech
        self._pause_secs = pause_secs
        self._stop = stop
        self._text = ""
        self._begun: int | None = None  # Piper's phrase count when the first phrase was put
        self._paused = False
        self._fast = threads != llama.n_threads
        if self._fast:
            _set_threads(llama, threads)

    def after(self, chunk: Any) -> None:
        """Call after each chunk put for the consumer."""
        if self._begun is None:
            self._text += _delta_text(chunk)
            if ends_first_phrase(self._text):
                self._begun = self._speech.begun
                self.close()
        elif not self._paused and self._pause_secs > 0 and self._speech.begun > self._begun:
            self._paused = True
            self._speech.wait_until_voiced(self._pause_secs, self._stop)

    def close(self) -> None:
        """Back to the configured generation threads (idempotent)."""
        if self._fast:
            self._fast = False
            _set_threads(self._llama, self._llama.n_threads)


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
        retries: int = 0,
        first_phrase_threads: int | None = None,
    ) -> None:
        self._models = models
        self._request = request
        self._yield_secs = yield_secs
        self._retries = retries  # of a reply whose opening is rejected: openings.py
        # None: the model's own generation threads throughout.
        self._first_phrase_threads = first_phrase_threads or models.llama.n_threads
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
            for attempt in range(self._retries + 1):
                text, rejected = self._stream_reply(llama, judge=attempt < self._retries)
                if rejected is None:
                    break
                logger.info("generating the reply again: %s", rejected)
                logger.debug("the rejected reply opened %r", text)
                self._request["seed"] = random.getrandbits(32)
                self._request["messages"] = for_retry(self._request["messages"], text)
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

    def _stream_reply(self, llama: Llama, *, judge: bool) -> tuple[str, str | None]:
        """Generate one reply, putting its chunks for the consumer: its text, and why it
        was rejected (None if it was not).

        With `judge`, nothing is put until the reply's first words are known, and a reply
        that `openings.rejection` turns down there is dropped unheard. Piper waits for a
        whole first phrase anyway, which is rarely shorter than those words.
        """
        pause = _FirstPhrase(
            llama,
            self._models.speech,
            threads=self._first_phrase_threads,
            pause_secs=self._yield_secs,
            stop=self._stop,
        )
        held: list[Any] | None = [] if judge else None
        text = ""
        # A generator: closed at once when left early, not whenever it is collected.
        chunks: Any = llama.create_chat_completion(**self._request)
        try:
            for chunk in chunks:
                if self._stop.is_set():
                    break
                text += _delta_text(chunk)
                if held is None:
                    self._put(chunk)
                    pause.after(chunk)
                    continue
                held.append(chunk)
                if not opening_known(text):
                    continue
                rejected = rejection(text, self._request["messages"])
                if rejected is not None:
                    return text, rejected
                for early in held:
                    self._put(early)
                    pause.after(early)
                held = None
            if held:  # a reply shorter than the words judged
                rejected = rejection(text, self._request["messages"])
                if rejected is not None:
                    return text, rejected
                for early in held:
                    self._put(early)
        finally:
            chunks.close()
            pause.close()
        return text, None

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
        self._retries = settings.llm_reply_retries
        self._first_phrase_threads = settings.llm_first_phrase_threads
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
        return _LlamaStream(
            self._models,
            request,
            yield_secs=self._yield_secs,
            retries=self._retries,
            first_phrase_threads=self._first_phrase_threads,
        )
