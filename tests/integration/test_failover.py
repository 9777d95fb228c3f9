"""When a cloud stage fails, the stage falls back to its local provider and the user still hears
an answer; the client and the log are told which provider failed and why.

The server runs `--preset seed` against local fakes of Deepgram, OpenAI and Cartesia (see
tests/fakes), whose faults are switched per test, or between turns of one session. Each test
opens its own session, and a session starts on the cloud providers afresh.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from pipecat.frames.frames import ErrorFrame
from pipecat.utils.errors import ErrorCategory
from tests.conftest import ServerProcess

from ai_operator.client import VoiceClient
from ai_operator.providers.failover import classify
from fakes import Fault
from fakes.harness import (
    TRAILING_SILENCE_SECS,
    TURN_TIMEOUT,
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

PROVIDER_TIMEOUT_SECS = 2.0
# Generous bounds for a turn answered locally on a 2-core machine shared with the fakes.
LOCAL_ANSWER_SECS = 8.0


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
    server = ServerProcess(
        ["--preset", "seed", "--provider-timeout-secs", str(PROVIDER_TIMEOUT_SECS), *args]
        + fakes.url_args(),
        env=fakes.env(),
        name=name,
    )
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def server(fakes: Fakes) -> Iterator[ServerProcess]:
    """The seed system with failover on (the default) and the default retry delay."""
    server = serve(fakes, name="failover")
    yield server
    server.stop()


def report(what: str, delay: float, bound: float) -> None:
    """Check how long the user waited for the bot's voice, and show it (pytest -s)."""
    print(f"\n{what}: audible after {delay:.1f} s")
    assert delay < bound, f"{what}: {delay:.1f} s"


def by_stage(client: VoiceClient) -> dict[str, dict]:
    return {n["stage"]: n for n in notices(client)}


def assert_heard_the_question(client: VoiceClient) -> None:
    heard = said_by_user(client)
    assert "capital" in heard and "france" in heard, heard


async def test_refused_deepgram_falls_back_to_local_whisper(fakes, server, question_pcm):
    fakes.deepgram.set_fault(Fault.REFUSE)
    async with VoiceClient(server.ws_url) as client:
        await greeted(client)
        end = await turn(client, question_pcm)

    report("deepgram refused", answer_delay(client, end), LOCAL_ANSWER_SECS)
    notice = by_stage(client)["stt"]
    assert notice["provider"] == "deepgram" and notice["fallback"] == "local"
    assert "connection failed" in notice["reason"] and "refused" in notice["reason"].lower()
    assert notice["permanent"] is False
    # Local Whisper heard the question and the cloud LLM got its words.
    assert_heard_the_question(client)
    assert "capital" in fakes.openai.requests[0].messages[0]["messages"][-1]["content"].lower()
    assert CLOUD_REPLY_PREFIX in said_by_bot(client)
    assert "stt provider 'deepgram' failed: connection failed" in server.log()


async def test_openai_server_error_is_answered_by_the_local_llm(fakes, server, question_pcm):
    fakes.openai.fault = Fault.SERVER_ERROR
    async with VoiceClient(server.ws_url) as client:
        await greeted(client)
        end = await turn(client, question_pcm)

    report("openai 500", answer_delay(client, end), LOCAL_ANSWER_SECS)
    assert list(by_stage(client)) == ["llm"]
    notice = by_stage(client)["llm"]
    assert notice["provider"] == "openai"
    assert notice["reason"] == "HTTP 500 Internal Server Error" and notice["permanent"] is False
    assert [r.outcome for r in fakes.openai.requests] == ["500"]
    answer = said_by_bot(client, after=end)
    assert answer and CLOUD_REPLY_PREFIX not in answer  # the local model's words...
    assert len(fakes.cartesia.spoken) >= 2  # ...spoken by the healthy cloud TTS


async def test_rate_limited_cartesia_speaks_with_piper(fakes, server, question_pcm):
    fakes.cartesia.fault = Fault.RATE_LIMITED
    async with VoiceClient(server.ws_url) as client:
        await greeted(client)  # the greeting itself is already Piper's
        end = await turn(client, question_pcm)

    report("cartesia 429", answer_delay(client, end), LOCAL_ANSWER_SECS)
    notice = by_stage(client)["tts"]
    assert notice["provider"] == "cartesia"
    assert notice["reason"] == "HTTP 429 Too Many Requests" and notice["permanent"] is False
    assert fakes.cartesia.spoken == []
    assert CLOUD_REPLY_PREFIX in said_by_bot(client)  # OpenAI's answer, in Piper's voice


async def test_a_failure_between_turns_fails_over_mid_session(fakes, server, question_pcm):
    async with VoiceClient(server.ws_url) as client:
        await greeted(client)
        first_end = await turn(client, question_pcm)
        assert not notices(client)
        assert CLOUD_REPLY_PREFIX in said_by_bot(client, after=first_end)

        fakes.openai.fault = Fault.SERVER_ERROR
        second_end = await turn(client, question_pcm)

    report("openai 500 mid-session", answer_delay(client, second_end), LOCAL_ANSWER_SECS)
    assert set(by_stage(client)) == {"llm"}
    assert said_by_bot(client, after=second_end)
    # The local model answered. (Not told by its words: with the cloud's "The cloud model
    # heard: ..." in the context, SmolLM2 sometimes copies it.)
    assert first_token_from(client, after=second_end) == ["LlamaCppLLMService"]
    assert len(fakes.openai.requests) == 2


def first_token_from(client: VoiceClient, *, after: float) -> list[str]:
    """The LLM services whose first token (RTVI `metrics` ttfb) came after `after`."""
    return [
        m["processor"].split("#")[0]
        for e in client.recording.of("metrics")
        if e.t > after
        for m in (e.data or {}).get("ttfb", [])
        if m.get("value") and "LLM" in m["processor"]
    ]


async def test_rejected_keys_are_reported_once_and_not_retried(fakes, server, question_pcm):
    """A 401 is permanent: one clear notice per stage, no retry loop, and no key leaked."""
    for fake in (fakes.deepgram, fakes.openai, fakes.cartesia):
        fake.api_key = "rotated-key"  # the server's keys no longer match
    async with VoiceClient(server.ws_url) as client:
        await greeted(client)
        await turn(client, question_pcm)
        await turn(client, question_pcm)

    stages = by_stage(client)
    assert len(notices(client)) == 3 and set(stages) == {"stt", "llm", "tts"}
    for stage, variable in (
        ("stt", "DEEPGRAM_API_KEY"),
        ("llm", "OPENAI_API_KEY"),
        ("tts", "CARTESIA_API_KEY"),
    ):
        notice = stages[stage]
        assert notice["permanent"] is True and notice["retry_after_secs"] is None
        assert notice["reason"].startswith("HTTP 401 Unauthorized"), notice
        assert variable in notice["reason"]
    # One attempt each, though the session went on for two turns.
    for fake in (fakes.deepgram, fakes.openai, fakes.cartesia):
        assert [r.outcome for r in fake.requests] == ["401"], (fake.name, fake.requests)
    assert_heard_the_question(client)
    log = server.log()
    assert "failed permanently: HTTP 401 Unauthorized" in log
    for key in fakes.env().values():
        assert key not in log


async def test_stalled_providers_are_noticed_and_answered_locally(fakes, server, question_pcm):
    """Accepted connections that never answer: each stage gives up after the timeout."""
    for fake in (fakes.deepgram, fakes.openai, fakes.cartesia):
        fake.fault = Fault.STALL
    async with VoiceClient(server.ws_url) as client:
        ready = time.monotonic()
        await greeted(client)
        end = await turn(client, question_pcm)

    stages = by_stage(client)
    assert set(stages) == {"stt", "llm", "tts"}
    assert stages["tts"]["reason"].startswith("timed out (no audio from Cartesia within 2 s")
    assert stages["stt"]["reason"].startswith("timed out (no transcript from Deepgram")
    assert stages["llm"]["reason"].startswith("timed out")
    assert_heard_the_question(client)  # the stalled utterance was replayed to Whisper
    # The greeting waits one timeout; the answer waits for the STT and the LLM timeouts.
    report("all stalled: greeting", answer_delay(client, ready), PROVIDER_TIMEOUT_SECS + 5.0)
    report("all stalled: answer", answer_delay(client, end), 2 * PROVIDER_TIMEOUT_SECS + 8.0)


async def test_malformed_streams_fail_over(fakes, server, question_pcm):
    for fake in (fakes.deepgram, fakes.openai, fakes.cartesia):
        fake.fault = Fault.GARBAGE
    async with VoiceClient(server.ws_url) as client:
        await greeted(client)
        end = await turn(client, question_pcm)

    report("all malformed", answer_delay(client, end), LOCAL_ANSWER_SECS)
    stages = by_stage(client)
    assert set(stages) == {"stt", "llm", "tts"}
    for notice in stages.values():
        assert notice["reason"].startswith("malformed response"), notice
    assert_heard_the_question(client)


async def test_each_stage_returns_to_the_cloud_after_a_temporary_failure(fakes, question_pcm):
    """With a short retry delay, every stage goes back to its cloud provider once healthy."""
    server = serve(fakes, "--failover-retry-secs", "1", name="failback")
    try:
        fakes.deepgram.set_fault(Fault.REFUSE)
        fakes.openai.fault = Fault.RATE_LIMITED
        fakes.cartesia.fault = Fault.SERVER_ERROR
        async with VoiceClient(server.ws_url) as client:
            await greeted(client)  # by Piper: Cartesia failed at the start, as did Deepgram
            assert {n["stage"] for n in notices(client)} == {"stt", "tts"}
            # Deepgram keeps reconnecting in the background (every 4 s); let the next succeed.
            fakes.deepgram.set_fault(Fault.NONE)
            fakes.cartesia.fault = Fault.NONE
            first_end = await turn(client, question_pcm)  # the LLM fails now: local answer
            fakes.openai.fault = Fault.NONE
            between = time.monotonic()
            second_end = await turn(client, question_pcm)
    finally:
        server.stop()

    assert sorted(n["stage"] for n in notices(client)) == ["llm", "stt", "tts"]
    restored = {n["stage"]: n for n in notices(client, "provider-restored")}
    assert set(restored) == {"stt", "llm", "tts"}, restored
    assert restored["llm"] == {"type": "provider-restored", "stage": "llm", "provider": "openai"}
    assert CLOUD_REPLY_PREFIX not in said_by_bot(client, after=first_end, before=between)
    assert CLOUD_REPLY_PREFIX in said_by_bot(client, after=second_end)
    assert [r.outcome for r in fakes.openai.requests] == ["429", "accepted"]
    assert fakes.deepgram.finals  # the second question was Deepgram's to transcribe
    assert any(CLOUD_REPLY_PREFIX in s for s in fakes.cartesia.spoken)  # and Cartesia's to say


async def test_with_failover_off_a_failure_is_reported_not_hidden(fakes, question_pcm):
    """--no-failover: no local models are loaded, and a failing stage is an error."""
    server = serve(fakes, "--no-failover", name="no-failover")
    try:
        fakes.openai.fault = Fault.SERVER_ERROR
        async with VoiceClient(server.ws_url) as client:
            await greeted(client)
            await client.stream(question_pcm)
            trailing = asyncio.create_task(client.silence(TRAILING_SILENCE_SECS))
            try:
                await client.wait_for(lambda r: bool(r.of("error")), timeout=TURN_TIMEOUT)
            finally:
                trailing.cancel()
        log = server.log()
    finally:
        server.stop()

    assert not notices(client)
    assert "Loading local models" not in log
    assert len(fakes.openai.requests) > 1  # the OpenAI client's own retries are back on


# ----------------------------------------------------------------------------------------
# How failures are classified (no server needed)
# ----------------------------------------------------------------------------------------


class _Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status_code = status


@pytest.mark.parametrize(
    ("exception", "retryable", "reason"),
    [
        (_Status(401), False, "HTTP 401 Unauthorized: the API key was rejected; check OPENAI"),
        (_Status(403), False, "HTTP 403 Forbidden"),
        (_Status(400), False, "HTTP 400 Bad Request"),
        (_Status(408), True, "HTTP 408"),
        (_Status(429), True, "HTTP 429 Too Many Requests"),
        (_Status(503), True, "HTTP 503 Service Unavailable"),
        (ConnectionRefusedError(111, "Connection refused"), True, "connection failed"),
        (OSError(-2, "Name or service not known"), True, "connection failed"),
        (TimeoutError("no audio"), True, "timed out (no audio)"),
        (ValueError("Expecting value"), True, "malformed response (Expecting value)"),
    ],
)
def test_failures_are_classified(exception, retryable, reason):
    error = ErrorFrame(error=str(exception), exception=exception)
    failure = classify("llm", "openai", error, secrets=["sk-secret"])
    assert failure.retryable is retryable
    assert failure.reason.startswith(reason), failure.reason


def test_a_permanent_category_without_status_is_not_retried():
    error = ErrorFrame(error="bad key", category=ErrorCategory.AUTHENTICATION)
    assert classify("stt", "deepgram", error).retryable is False


def test_reasons_never_quote_the_key():
    error = ErrorFrame(error="rejected key sk-secret-123 for this project")
    failure = classify("llm", "openai", error, secrets=["sk-secret-123"])
    assert "sk-secret-123" not in failure.reason and "sk-secret-123" not in str(failure)
