"""llama.cpp steps aside while Piper synthesises a reply's first phrase (the real SmolLM2
model; Piper's side is played by the test through the shared `SpeechProgress`), and reads
the next user message's header ahead once a reply is done."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import llama_cpp
import pytest
from llama_cpp import Llama

from ai_operator.config import Settings
from ai_operator.openings import first_words, looks_foreign
from ai_operator.phrases import ends_first_phrase
from ai_operator.providers import local_llm
from ai_operator.providers.local_llm import _LlamaStream, prime_next_user_turn
from ai_operator.providers.local_models import LlamaQueue, SpeechProgress, locate_gguf

STORY = [
    {"role": "system", "content": "You are a storyteller."},
    {"role": "user", "content": "Tell me a long story about a brave little dragon."},
]
SYNTHESIS_SECS = 0.4


def shared(llama, executor) -> SimpleNamespace:
    """What a `_LlamaStream` reads of `LocalModels`."""
    return SimpleNamespace(
        llama=llama, llm_executor=executor, llm_queue=LlamaQueue(), speech=SpeechProgress()
    )


@pytest.fixture(scope="module")
def llama():
    model = Llama(
        model_path=str(locate_gguf(Settings(_env_file=None))),
        n_ctx=512,
        n_threads=1,
        n_threads_batch=2,
        verbose=False,
    )
    yield model
    model.close()


async def tokens_while_synthesising(llama, *, yield_secs: float, voice: bool = True) -> int:
    """Streams a reply; one token after its first phrase is complete (the aggregator waits
    for the space after the punctuation) plays Piper beginning that phrase and voicing it
    `SYNTHESIS_SECS` later. Returns how many tokens arrived in between."""
    executor = ThreadPoolExecutor(1)
    models = shared(llama, executor)
    request = {"messages": list(STORY), "stream": True, "max_tokens": 40, "temperature": 0.0}
    stream = _LlamaStream(models, request, yield_secs=yield_secs)  # type: ignore[arg-type]
    arrivals: list[float] = []
    begun_at = None
    text = ""
    phrase_at = None
    try:
        async for chunk in stream:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content or ""
            if phrase_at is None and ends_first_phrase(text):
                phrase_at = len(arrivals)
            if phrase_at is not None and len(arrivals) == phrase_at + 1:
                begun_at = time.monotonic()
                models.speech.phrase_begun()
                if voice:
                    asyncio.get_running_loop().call_later(
                        SYNTHESIS_SECS, models.speech.phrase_voiced
                    )
    finally:
        await stream.aclose()
        executor.shutdown(wait=True)
    assert begun_at is not None, text
    assert len(arrivals) > phrase_at + 8  # the reply went on afterwards
    return sum(begun_at < t < begun_at + SYNTHESIS_SECS - 0.05 for t in arrivals)


async def test_generation_pauses_until_the_first_phrase_is_voiced(llama):
    # Without the pause a token comes every ~20-30 ms; with it, only the one in progress.
    assert await tokens_while_synthesising(llama, yield_secs=0.0) >= 5
    assert await tokens_while_synthesising(llama, yield_secs=1.0) <= 2


async def test_the_pause_is_bounded_when_the_phrase_is_never_voiced(llama):
    started = time.monotonic()
    during = await tokens_while_synthesising(llama, yield_secs=0.1, voice=False)
    assert during >= 3  # it went on after 0.1 s, well inside the 0.4 s window
    assert time.monotonic() - started < 10


CHAT = [
    {"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
    {"role": "assistant", "content": "Hello! What would you like to know?"},
    {"role": "user", "content": "What is the capital of France?"},
]


def request_for(messages, max_tokens: int = 30) -> dict:
    return {"messages": list(messages), "stream": True, "max_tokens": max_tokens, "temperature": 0}


async def drain(stream: _LlamaStream, *, stop_after: int | None = None) -> str:
    """Read a reply as the LLM service does; after `stop_after` chunks, interrupt it."""
    text, chunks = "", 0
    try:
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            chunks += 1
            if chunks == stop_after:
                break
    finally:
        await stream.aclose()
    return text.strip()


async def reply(
    llama,
    messages,
    *,
    stop_after: int | None = None,
    retries: int = 0,
    max_tokens: int = 30,
) -> tuple[str, _LlamaStream]:
    """Stream a reply to `messages`; returns its text once the model's thread is done."""
    executor = ThreadPoolExecutor(1)
    stream = _LlamaStream(
        shared(llama, executor),  # type: ignore[arg-type]
        request_for(messages, max_tokens),
        retries=retries,
    )
    try:
        text = await drain(stream, stop_after=stop_after)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
    return text, stream


def first_read(llama, monkeypatch, messages) -> int:
    """How many prompt tokens llama.cpp reads for a request on `messages`."""
    reads: list[int] = []
    real_eval = llama.eval

    def counted(tokens):
        reads.append(len(tokens))
        return real_eval(tokens)

    monkeypatch.setattr(llama, "eval", counted)
    llama.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
    monkeypatch.undo()
    return reads[0]


async def test_after_a_reply_the_next_user_header_is_already_read(llama, monkeypatch):
    llama.reset()
    answer, stream = await reply(llama, CHAT)
    assert answer and stream.primed_tokens >= 2  # at least end-of-message and "user"
    primed = llama.n_tokens
    follow_up = [*CHAT, {"role": "assistant", "content": answer}]
    follow_up.append({"role": "user", "content": "And of Spain?"})
    # The next request starts reading where the primed header ends: only the user's
    # words and the assistant header (~6 tokens) are left. Without the priming it read
    # 15 tokens here, the user header too.
    words = len(llama.tokenize(b"And of Spain?", add_bos=False))
    read = first_read(llama, monkeypatch, follow_up)
    assert llama.n_tokens > primed and read <= words + 7


async def test_nothing_is_read_ahead_for_an_interrupted_reply_or_another_conversation(llama):
    llama.reset()
    _, stream = await reply(llama, CHAT, stop_after=2)
    assert stream.primed_tokens == 0
    cached = llama.n_tokens
    other = [{"role": "system", "content": "Another conversation."}, *CHAT[1:]]
    assert prime_next_user_turn(llama, other) == 0
    assert llama.n_tokens == cached


async def test_a_failed_read_ahead_costs_nothing_but_a_warning(llama, monkeypatch, caplog):
    def broken(*_args, **_kwargs):
        raise ValueError("template error")

    monkeypatch.setattr(local_llm, "prime_next_user_turn", broken)
    llama.reset()
    answer, stream = await reply(llama, CHAT)
    assert answer and stream.primed_tokens == 0
    assert "reading the next user turn ahead failed: template error" in caplog.text


async def test_the_read_ahead_gives_way_to_a_waiting_generation(llama):
    """Another conversation's request queued behind a reply is not kept waiting by that
    reply's read-ahead (which it would undo anyway)."""
    llama.reset()
    executor = ThreadPoolExecutor(1)
    models = shared(llama, executor)
    first = _LlamaStream(models, request_for(CHAT))  # type: ignore[arg-type]
    other = [{"role": "system", "content": "Be brief."}, CHAT[-1]]
    second = _LlamaStream(models, request_for(other))  # type: ignore[arg-type]
    try:
        assert await drain(first) and await drain(second)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
    assert first.primed_tokens == 0  # the second was waiting when the first finished
    assert second.primed_tokens >= 2  # nobody was waiting behind the second
    assert not models.llm_queue.busy()


# One French reply in the conversation and SmolLM2 answers every later question in French
# (25-27 of 27 replies in three conversations, offline, at temperatures 0.3 and 0.6).
AFTER_A_FRENCH_REPLY = [
    *CHAT,
    {"role": "assistant", "content": "Allez, le Grand Parlement de Paris est la cité."},
    {"role": "user", "content": "How many legs does a spider have?"},
]


async def test_a_reply_that_opens_in_another_language_is_generated_again(llama):
    unguarded, _ = await reply(llama, AFTER_A_FRENCH_REPLY)
    assert looks_foreign(unguarded), unguarded  # what the guard is for
    # What the consumer receives is the whole reply: none of the dropped one leaked.
    guarded, _ = await reply(llama, AFTER_A_FRENCH_REPLY, retries=1)
    assert guarded and not looks_foreign(guarded), guarded


async def test_a_reply_shorter_than_the_words_judged_is_passed_on_whole(llama):
    question = [CHAT[0], {"role": "user", "content": "How many legs does a spider have?"}]
    plain, _ = await reply(llama, question, max_tokens=2)
    guarded, _ = await reply(llama, question, retries=1, max_tokens=2)
    assert not looks_foreign(plain) and 0 < len(plain.split()) < 3, plain
    assert guarded == plain


# SmolLM2 copies an odd opener of its own into the following replies (nine turns in a row
# in one benchmark run).
AFTER_AN_ODD_OPENER = [
    *CHAT,
    {"role": "assistant", "content": "Bahaha, my friend. The capital of France is Paris."},
    {"role": "user", "content": "How many legs does a spider have?"},
    {"role": "assistant", "content": "Bahaha, my friend. A spider has eight legs."},
    {"role": "user", "content": "Who wrote Romeo and Juliet?"},
]


async def test_a_reply_that_opens_as_an_earlier_one_did_is_generated_again(llama):
    copied, _ = await reply(llama, AFTER_AN_ODD_OPENER)
    assert first_words(copied) == ["bahaha", "my", "friend"], copied  # the habit
    guarded, _ = await reply(llama, AFTER_AN_ODD_OPENER, retries=1)
    assert guarded and first_words(guarded) != ["bahaha", "my", "friend"], guarded


async def test_the_first_phrase_is_generated_with_more_threads(llama):
    """Two threads until the first phrase is complete (the model's own 1 before and after)."""
    executor = ThreadPoolExecutor(1)
    request = {"messages": list(STORY), "stream": True, "max_tokens": 40, "temperature": 0.0}
    stream = _LlamaStream(shared(llama, executor), request, first_phrase_threads=2)  # type: ignore[arg-type]
    seen: list[tuple[str, int]] = []
    text = ""
    try:
        async for chunk in stream:
            text += chunk.choices[0].delta.content or ""
            seen.append((text, llama_cpp.llama_n_threads(llama.ctx)))
    finally:
        await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
    assert ends_first_phrase(seen[-1][0]) and not ends_first_phrase(seen[0][0]), text
    assert seen[0][1] == 2  # the first token: well inside the first phrase
    assert llama_cpp.llama_n_threads(llama.ctx) == llama.n_threads == 1  # restored
