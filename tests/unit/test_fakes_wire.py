"""The provider fakes speak the real wire protocols: checked with the vendors' own clients.

The OpenAI fake is driven by the official `openai` SDK, the Deepgram fake by the official
`deepgram-sdk`; Cartesia's Python SDK is not a dependency, so its fake is driven over a plain
WebSocket with the messages Cartesia documents (the same ones Pipecat sends).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
from deepgram.core.api_error import ApiError
from deepgram.core.events import EventType
from deepgram.listen.v1.types import ListenV1CloseStream, ListenV1Finalize
from openai import (
    APIConnectionError,
    APITimeoutError,
    AsyncOpenAI,
    AuthenticationError,
    InternalServerError,
    RateLimitError,
)

from ai_operator.audio import AUDIBLE_RMS, FRAME_MS, INPUT_FRAME_BYTES, rms_int16
from fakes import Fault
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.openai import CLOUD_REPLY_PREFIX, FakeOpenAI, Reply, ToolCall
from fakes.scripted import phrase_secs, speech_secs_for

pytestmark = pytest.mark.models  # the Deepgram and Cartesia fakes load Whisper and Piper


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def deepgram_fake() -> Iterator[FakeDeepgram]:
    with FakeDeepgram() as fake:
        yield fake


@pytest.fixture(scope="module")
def cartesia_fake() -> Iterator[FakeCartesia]:
    with FakeCartesia() as fake:
        yield fake


# --- OpenAI ---------------------------------------------------------------------------


def _client(fake: FakeOpenAI, key: str = "test-openai-key", timeout: float = 10.0) -> AsyncOpenAI:
    return AsyncOpenAI(api_key=key, base_url=fake.base_url, max_retries=0, timeout=timeout)


async def test_openai_streams_a_reply_built_from_the_last_user_message(openai_fake):
    openai_fake.reset()
    stream = await _client(openai_fake).chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text == f"{CLOUD_REPLY_PREFIX} Hi"
    assert usage is not None and usage.total_tokens > 0
    assert openai_fake.requests[0].messages[0]["model"] == "gpt-4o"


async def test_openai_streams_tool_calls_in_fragments(openai_fake):
    openai_fake.reset()
    openai_fake.script.append(Reply(tool_calls=[ToolCall("get_time", {"zone": "Europe/Paris"})]))
    stream = await _client(openai_fake).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Time?"}], stream=True
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or []:
            name += call.function.name or ""
            arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_time" and json.loads(arguments) == {"zone": "Europe/Paris"}
    assert finish == "tool_calls"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.UNAUTHORIZED, AuthenticationError),
        (Fault.RATE_LIMITED, RateLimitError),
        (Fault.SERVER_ERROR, InternalServerError),
        (Fault.GARBAGE, json.JSONDecodeError),
        (Fault.STALL, APITimeoutError),
        (Fault.REFUSE, APIConnectionError),
    ],
)
async def test_openai_faults_look_like_the_real_failures(openai_fake, fault, error):
    openai_fake.reset()
    openai_fake.set_fault(fault)
    try:
        with pytest.raises(error):
            stream = await _client(openai_fake, timeout=1.0).chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            async for _ in stream:
                pass
    finally:
        openai_fake.reset()


async def test_openai_first_token_comes_after_the_latency_then_one_per_token_delay(openai_fake):
    openai_fake.reset()
    openai_fake.latency_secs, openai_fake.token_delay_secs = 0.2, 0.05
    openai_fake.script.append(Reply(text="one two three four five"))
    try:
        sent = time.monotonic()
        stream = await _client(openai_fake).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Count"}], stream=True
        )
        arrivals = [
            time.monotonic() - sent
            async for chunk in stream
            if chunk.choices and chunk.choices[0].delta.content
        ]
    finally:
        openai_fake.reset()
    assert len(arrivals) == 5
    assert arrivals[0] >= 0.2
    assert arrivals[-1] - arrivals[0] >= 4 * 0.05 - 0.01  # asyncio.sleep never wakes early


async def test_openai_rejects_a_wrong_key(openai_fake):
    openai_fake.reset()
    with pytest.raises(AuthenticationError):
        await _client(openai_fake, key="wrong").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )


# --- Deepgram -------------------------------------------------------------------------


def _deepgram(fake: FakeDeepgram, key: str = "test-deepgram-key") -> AsyncDeepgramClient:
    environment = DeepgramClientEnvironment(
        base=fake.http_url, production=fake.ws_url, agent=fake.ws_url, agent_rest=fake.http_url
    )
    return AsyncDeepgramClient(api_key=key, environment=environment)


async def test_deepgram_transcribes_live_audio_with_interim_and_final_results(
    deepgram_fake, question_pcm
):
    deepgram_fake.reset()
    messages: list = []
    options = {
        "model": "nova-3",
        "encoding": "linear16",
        "sample_rate": "16000",
        "channels": "1",
        "interim_results": "true",
    }
    async with _deepgram(deepgram_fake).listen.v1.connect(**options) as connection:

        async def on_message(message: object) -> None:
            messages.append(message)

        connection.on(EventType.MESSAGE, on_message)
        listening = asyncio.create_task(connection.start_listening())
        for offset in range(0, len(question_pcm), INPUT_FRAME_BYTES):
            await connection.send_media(question_pcm[offset : offset + INPUT_FRAME_BYTES])
            await asyncio.sleep(FRAME_MS / 1000)  # paced like a microphone
        # The interim guess (Whisper on the first second) may still be running on a busy
        # machine; a Finalize now would close the utterance and make the guess stale, which
        # the fake, like Deepgram, then never sends.
        await deepgram_fake.wait_until(lambda: bool(deepgram_fake.interims), timeout=30)
        await connection.send_finalize(ListenV1Finalize(type="Finalize"))
        await deepgram_fake.wait_until(lambda: bool(deepgram_fake.finalize_secs), timeout=30)
        await connection.send_close_stream(ListenV1CloseStream(type="CloseStream"))
        await asyncio.wait_for(listening, 30)

    results = [m for m in messages if type(m).__name__ == "ListenV1Results"]
    final = [r for r in results if r.is_final]
    assert final[-1].from_finalize is True  # Finalize is always answered, if only with ''
    transcript = " ".join(r.channel.alternatives[0].transcript for r in final).lower()
    assert "capital" in transcript and "france" in transcript
    assert any(not r.is_final for r in results)  # an interim came first
    assert type(messages[-1]).__name__ == "ListenV1Metadata"


async def test_scripted_deepgram_answers_the_matching_phrase_after_its_latency(question_pcm):
    """No Whisper: the utterance's speech length picks the phrase; Finalize -> final waits
    exactly the latency."""
    with FakeDeepgram(scripted=True) as fake:
        fake.latency_secs = 0.25
        fake.phrases = {
            "What is the capital of France?": phrase_secs(question_pcm),
            "A much longer question that nobody asked in this test at all?": 9.0,
        }
        finals: list[tuple[float, Any]] = []
        interims: list[str] = []
        options = {"model": "nova-3", "encoding": "linear16", "interim_results": "true"}
        async with _deepgram(fake).listen.v1.connect(**options) as connection:

            async def on_message(message: Any) -> None:
                if type(message).__name__ == "ListenV1Results":
                    text = message.channel.alternatives[0].transcript
                    if message.is_final:
                        finals.append((time.monotonic(), message))
                    elif text:
                        interims.append(text)

            connection.on(EventType.MESSAGE, on_message)
            listening = asyncio.create_task(connection.start_listening())
            pcm = question_pcm + bytes(INPUT_FRAME_BYTES * 10)  # 0.2 s of silence after it
            for offset in range(0, len(pcm), INPUT_FRAME_BYTES):  # faster than real time
                await connection.send_media(pcm[offset : offset + INPUT_FRAME_BYTES])
            finalized = time.monotonic()
            await connection.send_finalize(ListenV1Finalize(type="Finalize"))
            await fake.wait_until(lambda: bool(fake.finalize_secs), timeout=10)
            await connection.send_close_stream(ListenV1CloseStream(type="CloseStream"))
            await asyncio.wait_for(listening, 10)
        assert fake._whisper is None  # nothing was loaded
    at, final = finals[-1]
    assert final.channel.alternatives[0].transcript == "What is the capital of France?"
    assert final.from_finalize is True
    assert at - finalized >= 0.25
    assert interims and "What is the capital of France?".startswith(interims[0])


async def test_scripted_cartesia_speaks_a_synthetic_voice_after_its_latency():
    with FakeCartesia(scripted=True) as fake:
        fake.latency_secs = 0.15
        headers = {"X-API-Key": "test-cartesia-key", "Cartesia-Version": "2026-03-01"}
        chunks: list[bytes] = []
        async with websockets.connect(
            f"{fake.ws_url}/tts/websocket", additional_headers=headers
        ) as ws:
            sent = time.monotonic()
            await ws.send(_request("c1", "Hello there, how are you?", False))
            first_at = None
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "chunk":
                    first_at = first_at or time.monotonic()
                    chunks.append(base64.b64decode(message["data"]))
                elif message["type"] == "done":
                    break
        assert fake._voice is None  # Piper was never loaded
    assert first_at is not None and first_at - sent >= 0.15
    assert rms_int16(chunks[0]) >= AUDIBLE_RMS  # first audio is first audible audio
    seconds = sum(len(c) for c in chunks) / (2 * 24000)
    assert seconds == pytest.approx(speech_secs_for("Hello there, how are you?"), abs=0.01)


async def test_deepgram_rejects_a_wrong_key_at_the_handshake(deepgram_fake):
    deepgram_fake.reset()
    with pytest.raises(ApiError) as raised:
        async with _deepgram(deepgram_fake, key="wrong").listen.v1.connect(model="nova-3"):
            pass
    assert raised.value.status_code == 401


# --- Cartesia -------------------------------------------------------------------------


def _request(context_id: str, transcript: str, more: bool) -> str:
    return json.dumps(
        {
            "context_id": context_id,
            "model_id": "sonic-3",
            "transcript": transcript,
            "continue": more,
            "voice": {"mode": "id", "id": "71a7ad14-091c-4e8e-a314-022ece01c121"},
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
            "add_timestamps": True,
            "language": "en",
        }
    )


async def test_cartesia_speaks_a_continued_context_with_timestamps(cartesia_fake):
    cartesia_fake.reset()
    headers = {"X-API-Key": "test-cartesia-key", "Cartesia-Version": "2026-03-01"}
    url = f"{cartesia_fake.ws_url}/tts/websocket"
    audio, words, kinds = b"", [], []
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(_request("c1", "Hello there.", True))
        await ws.send(_request("c1", " How are you?", True))
        await ws.send(_request("c1", "", False))
        async for raw in ws:
            message = json.loads(raw)
            kinds.append(message["type"])
            assert message["context_id"] == "c1"
            if message["type"] == "chunk":
                audio += base64.b64decode(message["data"])
            elif message["type"] == "timestamps":
                words += message["word_timestamps"]["words"]
            elif message["type"] == "done":
                break
    assert words == ["Hello", "there.", "How", "are", "you?"]
    assert kinds[-1] == "done" and "chunk" in kinds
    assert len(audio) / (2 * 24000) > 1.0  # over a second of real speech at 24 kHz


async def test_cartesia_rejects_a_wrong_key_and_reports_bad_requests(cartesia_fake):
    cartesia_fake.reset()
    url = f"{cartesia_fake.ws_url}/tts/websocket"
    with pytest.raises(websockets.InvalidStatus) as raised:
        async with websockets.connect(url, additional_headers={"X-API-Key": "wrong"}):
            pass
    assert raised.value.response.status_code == 401
    query = f"{url}?api_key=test-cartesia-key&cartesia_version=2026-03-01"
    async with websockets.connect(query) as ws:
        await ws.send(json.dumps({"context_id": "c2", "transcript": "Hi"}))
        error = json.loads(await ws.recv())
    assert error["type"] == "error" and error["status_code"] == 400
