"""Each cloud provider, alone and together, talked to through the real server.

The server runs as a subprocess and reaches local fakes that speak Deepgram's, OpenAI's and
Cartesia's real wire protocols (tests/fakes), through the same base-URL settings a user would
change. The Deepgram fake transcribes with real Whisper and the Cartesia fake speaks with
real Piper, so a turn is real speech in and real speech out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.conftest import ServerProcess

from ai_operator.audio import OUTPUT_SAMPLE_RATE, pcm_duration_secs
from ai_operator.client import VoiceClient
from ai_operator.config import (
    CARTESIA_BRITISH_READING_LADY,
    DEFAULT_GREETING,
    DEFAULT_SYSTEM_PROMPT,
)
from fakes.harness import (
    Fakes,
    answer_delay,
    greeted,
    notices,
    said_by_bot,
    said_by_user,
    start_fakes,
    stop_fakes,
    turn,
)
from fakes.openai import CLOUD_REPLY_PREFIX


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    fakes = start_fakes()
    try:
        yield fakes
    finally:
        stop_fakes(fakes)


@pytest.fixture(autouse=True)
def healthy(fakes: Fakes) -> None:
    fakes.reset()


def serve(fakes: Fakes, *args: str, name: str) -> ServerProcess:
    server = ServerProcess([*args, *fakes.url_args()], env=fakes.env(), name=name)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def seed_server(fakes: Fakes) -> Iterator[ServerProcess]:
    server = serve(fakes, "--preset", "seed", name="seed")
    yield server
    server.stop()


def assert_heard_the_question(client: VoiceClient) -> None:
    heard = said_by_user(client)
    assert "capital" in heard and "france" in heard, heard


async def test_deepgram_transcribes_a_spoken_turn(fakes, question_pcm):
    """--stt deepgram with the local LLM and TTS: Deepgram's transcript drives the reply."""
    server = serve(fakes, "--stt", "deepgram", name="deepgram-only")
    try:
        async with VoiceClient(server.ws_url) as client:
            await greeted(client)
            await turn(client, question_pcm)
    finally:
        server.stop()

    assert_heard_the_question(client)
    assert any("capital" in t.lower() for t in fakes.deepgram.finals), fakes.deepgram.finals
    # Interim results were asked for, sent, and reached the client as non-final transcripts.
    (connection,) = [r for r in fakes.deepgram.requests if r.outcome == "accepted"]
    query = connection.query
    assert query["model"] == "nova-3" and query["language"] == "en"
    assert query["encoding"] == "linear16" and query["sample_rate"] == "16000"
    assert query["interim_results"] == "true"
    assert connection.headers["Authorization"] == "Token test-deepgram-key"
    # Raw PCM is sent uncompressed: deflating it cost CPU for next to no bytes saved.
    assert "deflate" not in connection.headers.get("Sec-WebSocket-Extensions", "")
    assert fakes.deepgram.interims
    interim = [e for e in client.recording.of("user-transcription") if not e.data.get("final")]
    assert interim, "no interim transcript reached the client"
    assert {"type": "Finalize"} in connection.messages  # Pipecat flushes at the end of speech
    assert not notices(client)


async def test_openai_answers_a_spoken_turn(fakes, question_pcm):
    """--llm openai with local STT and TTS: the transcript reaches the LLM, its reply is spoken."""
    server = serve(fakes, "--llm", "openai", name="openai-only")
    try:
        async with VoiceClient(server.ws_url) as client:
            await greeted(client)
            await turn(client, question_pcm)
    finally:
        server.stop()

    assert_heard_the_question(client)
    (request,) = fakes.openai.requests
    assert request.headers["Authorization"] == "Bearer test-openai-key"
    body = request.messages[0]
    assert body["model"] == "gpt-4o" and body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    assert "capital" in body["messages"][-1]["content"].lower()
    spoken = said_by_bot(client)
    assert CLOUD_REPLY_PREFIX in spoken and "capital" in spoken.lower(), spoken
    assert not notices(client)


async def test_cartesia_speaks_greeting_and_answer(fakes, question_pcm):
    """--tts cartesia with local STT and LLM: both utterances are Cartesia's audio."""
    server = serve(fakes, "--tts", "cartesia", name="cartesia-only")
    try:
        async with VoiceClient(server.ws_url) as client:
            await greeted(client)
            greeting_audio = len(client.recording.audio_bytes())
            await turn(client, question_pcm)
    finally:
        server.stop()

    assert_heard_the_question(client)
    spoken = " ".join(fakes.cartesia.spoken)
    assert DEFAULT_GREETING.split(".")[0] in spoken, spoken
    assert len(fakes.cartesia.spoken) >= 2  # the greeting and at least one sentence of answer
    assert set(fakes.cartesia.voices) == {CARTESIA_BRITISH_READING_LADY}
    assert set(fakes.cartesia.models) == {"sonic-3"}
    (connection,) = [r for r in fakes.cartesia.requests if r.outcome == "accepted"]
    assert connection.headers["X-API-Key"] == "test-cartesia-key"
    request = connection.messages[0]
    assert request["output_format"] == {
        "container": "raw",
        "encoding": "pcm_s16le",
        "sample_rate": OUTPUT_SAMPLE_RATE,  # the pipeline's rate: no resampling on the way
    }
    assert pcm_duration_secs(greeting_audio, OUTPUT_SAMPLE_RATE) > 1.0
    # The words the client is shown come from Cartesia's timestamps.
    assert "AI Operator" in said_by_bot(client)
    assert not notices(client)


async def test_seed_preset_uses_all_three_clouds(fakes, seed_server, question_pcm):
    """--preset seed: Deepgram hears, OpenAI answers, Cartesia speaks; no fallback used."""
    async with VoiceClient(seed_server.ws_url) as client:
        await greeted(client)
        end = await turn(client, question_pcm)

    delay = answer_delay(client, end)
    print(f"\nseed, all healthy: first audible answer {delay:.1f} s after speech ended")
    assert_heard_the_question(client)
    assert any("capital" in t.lower() for t in fakes.deepgram.finals)
    (request,) = fakes.openai.requests
    assert "capital" in request.messages[0]["messages"][-1]["content"].lower()
    reply = fakes.openai.replies[0]
    assert any(reply.split(":")[0] in s for s in fakes.cartesia.spoken), fakes.cartesia.spoken
    assert CLOUD_REPLY_PREFIX in said_by_bot(client, after=end)
    assert not notices(client)
    health = seed_server.log()
    assert "deepgram nova-3" in health and "cartesia sonic-3" in health


async def test_mixed_cloud_and_local_stages(fakes, question_pcm):
    """Deepgram and Cartesia around the local LLM: stages mix freely by config."""
    server = serve(fakes, "--stt", "deepgram", "--tts", "cartesia", name="mixed")
    try:
        async with VoiceClient(server.ws_url) as client:
            await greeted(client)
            await turn(client, question_pcm)
    finally:
        server.stop()

    assert_heard_the_question(client)
    assert fakes.deepgram.finals and len(fakes.cartesia.spoken) >= 2
    assert not fakes.openai.requests
    assert CLOUD_REPLY_PREFIX not in said_by_bot(client)  # the local model answered
    assert not notices(client)
