"""A real WebSocket client talks to the real server running the real local models."""

from __future__ import annotations

import asyncio

import httpx

from ai_operator.audio import AUDIBLE_RMS, rms_int16
from ai_operator.client import VoiceClient

TURN_TIMEOUT = 60.0


async def test_greets_then_answers_a_spoken_question(live_server, question_pcm):
    async with VoiceClient(live_server.ws_url) as client:
        await client.ready()
        # The greeting is spoken first, as audible audio.
        await client.wait_for(lambda r: bool(r.of("bot-stopped-speaking")), timeout=TURN_TIMEOUT)
        greeting = client.recording.audio_bytes()
        assert rms_int16(greeting) > AUDIBLE_RMS

        await client.silence(0.4)
        end_of_speech = await client.stream(question_pcm)
        trailing = asyncio.create_task(client.silence(8.0))
        try:
            await client.wait_for(
                lambda r: (
                    r.first_audible_after(end_of_speech) is not None
                    and len(r.of("bot-stopped-speaking")) >= 2
                ),
                timeout=TURN_TIMEOUT,
            )
        finally:
            trailing.cancel()

    user_text = " ".join(client.recording.texts("user-transcription")).lower()
    assert "capital" in user_text and "france" in user_text, user_text
    bot_words = " ".join(client.recording.texts("bot-output")).strip()
    assert len(bot_words) > len("Hello! I'm the AI Operator. How can I help you today?"), bot_words


async def test_healthz_reports_providers(live_server):
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"{live_server.base_url}/healthz")).json()
    assert body["status"] == "ok"
    assert body["providers"] == {"stt": "local", "llm": "local", "tts": "local"}


async def test_bad_messages_get_errors_and_others_keep_talking(live_server, question_pcm):
    """Garbage and oversized messages get an RTVI error; a second session is unaffected."""
    async with VoiceClient(live_server.ws_url) as bad, VoiceClient(live_server.ws_url) as good:
        await bad.ready()
        await good.ready()
        await bad.send(b"\xff\x00 definitely not protobuf")
        await bad.wait_for(lambda r: bool(r.of("error")), timeout=10)
        await bad.send(b"\x12" + b"\x00" * (200 * 1024))  # over the 64 KiB default limit
        await bad.wait_for(lambda r: any("limit" in str(e.data) for e in r.of("error")), timeout=10)
        errors = [str(e.data.get("error")) for e in bad.recording.of("error")]
        assert any("protobuf" in e for e in errors), errors
        # The bad session is still open and the good one still converses.
        assert not bad.closed.is_set()
        end = await good.stream(question_pcm)
        trailing = asyncio.create_task(good.silence(8.0))
        try:
            await good.wait_for(
                lambda r: r.first_audible_after(end) is not None, timeout=TURN_TIMEOUT
            )
        finally:
            trailing.cancel()
    assert live_server.alive()
