"""A local stage raises, stalls or answers with nothing: the bot apologises out loud, the
client gets an RTVI error, and the next turn is answered normally.

Faults come from the test-only setting AI_OPERATOR_FAULT_INJECT (see faults.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.integration.conftest import running_server

from ai_operator.audio import AUDIBLE_RMS, rms_int16
from ai_operator.client import VoiceClient, rtvi_message
from ai_operator.session import APOLOGY_NO_ANSWER, APOLOGY_NOT_HEARD

REPLY_TIMEOUT_SECS = 6
TURN_TIMEOUT = 60.0


def fault_server(spec: str):
    args = ["--greeting", "", "--reply-timeout-secs", str(REPLY_TIMEOUT_SECS)]
    return running_server(args, env={"AI_OPERATOR_FAULT_INJECT": spec}, name="faults")


class Turn:
    """What the client got between a question and the end of the bot's answer."""

    def __init__(self, client: VoiceClient, start: float) -> None:
        events = [e for e in client.recording.events if e.t >= start]
        self.errors = [str(e.data.get("error")) for e in events if e.kind == "error"]
        self.said = " ".join(str(e.data.get("text", "")) for e in events if e.kind == "bot-output")
        self.audio = b"".join(e.data for e in events if e.kind == "audio")


async def turn(client: VoiceClient, ask, *, until_said: str | None = None) -> Turn:
    """Ask (`ask()` sends the question and may return a task still sending, such as
    trailing silence), then wait until the bot has spoken and stopped, or said `until_said`.
    """
    start = time.monotonic()
    background = await ask()

    def done(r) -> bool:
        said = " ".join(str(e.data.get("text", "")) for e in r.of("bot-output") if e.t >= start)
        stopped = any(e.t >= start for e in r.of("bot-stopped-speaking"))
        if until_said is not None:
            return until_said in said and stopped
        return bool(said) and stopped

    try:
        await client.wait_for(done, timeout=TURN_TIMEOUT)
    finally:
        if background is not None:
            background.cancel()
    return Turn(client, start)


def typed(client: VoiceClient, text: str, n: int):
    async def ask() -> None:
        await client.send(rtvi_message("send-text", {"content": text}, msg_id=f"q{n}"))

    return ask


def spoken(client: VoiceClient, pcm: bytes):
    """Say `pcm`, then keep the microphone open (silence) while the bot answers."""

    async def ask() -> asyncio.Task[None]:
        await client.stream(pcm)
        return asyncio.create_task(client.silence(TURN_TIMEOUT))

    return ask


def assert_apologised(result: Turn, apology: str, error: str) -> None:
    assert apology in result.said, result.said
    assert any(error in e for e in result.errors), result.errors
    assert rms_int16(result.audio) > AUDIBLE_RMS


def assert_answered(result: Turn) -> None:
    assert result.said, result.said
    assert APOLOGY_NO_ANSWER not in result.said and APOLOGY_NOT_HEARD not in result.said
    assert rms_int16(result.audio) > AUDIBLE_RMS


async def test_llm_raise_stall_and_empty_in_turn_then_a_real_answer():
    with fault_server("llm:raise:1,llm:stall:1,llm:empty:1") as server:
        async with VoiceClient(server.ws_url) as client:
            await client.ready()
            question = "What is the capital of France?"
            failed = await turn(client, typed(client, question, 1), until_said=APOLOGY_NO_ANSWER)
            assert_apologised(failed, APOLOGY_NO_ANSWER, "llm failed")
            started = time.monotonic()
            stalled = await turn(client, typed(client, question, 2), until_said=APOLOGY_NO_ANSWER)
            assert_apologised(
                stalled, APOLOGY_NO_ANSWER, f"llm did not answer within {REPLY_TIMEOUT_SECS} s"
            )
            assert time.monotonic() - started >= REPLY_TIMEOUT_SECS
            empty = await turn(client, typed(client, question, 3), until_said=APOLOGY_NO_ANSWER)
            assert_apologised(empty, APOLOGY_NO_ANSWER, "llm gave an empty answer")
            assert_answered(await turn(client, typed(client, question, 4)))
            assert not client.closed.is_set()
        log = server.log()
    assert log.count("no reply: llm") == 3


@pytest.mark.parametrize("mode", ["raise", "stall"])
async def test_tts_fault_then_a_real_answer(mode):
    with fault_server(f"tts:{mode}:1") as server:
        async with VoiceClient(server.ws_url) as client:
            await client.ready()
            question = "Tell me about the moon."
            failed = await turn(client, typed(client, question, 1), until_said=APOLOGY_NO_ANSWER)
            # A stalled TTS is caught by Pipecat's own no-audio check or by the watchdog.
            error = "tts failed" if mode == "raise" else "tts "
            assert_apologised(failed, APOLOGY_NO_ANSWER, error)
            assert_answered(await turn(client, typed(client, question, 2)))
        assert "no reply: tts" in server.log()


@pytest.mark.parametrize("mode", ["raise", "stall"])
async def test_stt_fault_then_a_real_answer(mode, question_pcm):
    with fault_server(f"stt:{mode}:1") as server:
        async with VoiceClient(server.ws_url) as client:
            await client.ready()
            failed = await turn(client, spoken(client, question_pcm), until_said=APOLOGY_NOT_HEARD)
            assert_apologised(failed, APOLOGY_NOT_HEARD, "stt failed")
            answer = await turn(client, spoken(client, question_pcm))
            heard = " ".join(client.recording.texts("user-transcription")).lower()
            assert "capital" in heard and "france" in heard, heard
            assert_answered(answer)
        assert "no reply: stt error" in server.log()
