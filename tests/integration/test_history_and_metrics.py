"""After a real spoken conversation: /metrics counts it and /history serves its transcript."""

from __future__ import annotations

import asyncio

import httpx

from ai_operator.client import VoiceClient

TURN_TIMEOUT = 60.0


def metric(text: str, name: str) -> float:
    """Sum of a Prometheus sample family's values (all label sets)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head.startswith(name + "{"):
                total += float(value)
    return total


async def test_a_conversation_is_counted_and_stored(live_server, question_pcm):
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        before = (await http.get("/metrics")).text
        async with VoiceClient(live_server.ws_url) as client:
            await client.ready()
            await client.wait_for(
                lambda r: bool(r.of("bot-stopped-speaking")), timeout=TURN_TIMEOUT
            )
            await client.silence(0.4)
            end = await client.stream(question_pcm)
            trailing = asyncio.create_task(client.silence(8.0))
            try:
                await client.wait_for(
                    lambda r: (
                        len(r.of("bot-stopped-speaking")) >= 2
                        and bool(
                            [
                                e
                                for e in r.of("server-message")
                                if e.data.get("type") == "turn-metrics"
                            ]
                        )
                    ),
                    timeout=TURN_TIMEOUT,
                )
            finally:
                trailing.cancel()
            assert client.recording.first_audible_after(end) is not None
        after = (await http.get("/metrics")).text

        assert metric(after, "aiop_sessions_total") >= metric(before, "aiop_sessions_total") + 1
        assert metric(after, "aiop_turns_total") >= metric(before, "aiop_turns_total") + 3
        assert metric(after, "aiop_voice_to_voice_seconds_count") > metric(
            before, "aiop_voice_to_voice_seconds_count"
        )
        assert 'aiop_stage_ttfb_seconds_count{provider="local",stage="stt"}' in after

        page = await http.get("/history")
        assert page.status_code == 200 and "history" in page.text.lower()
        listing = (await http.get("/api/conversations")).json()
        ours = next(
            c for c in listing if c["first_user_text"] and "capital" in c["first_user_text"].lower()
        )
        convo = (await http.get(f"/api/conversations/{ours['id']}")).json()
        speakers = [t["speaker"] for t in convo["turns"]]
        assert speakers[:3] == ["bot", "user", "bot"], speakers
        answer = convo["turns"][2]
        assert answer["text"] and "voice_to_voice" in answer["latencies"]
        assert (await http.get("/api/conversations/not-a-real-id")).status_code == 404
