"""Clients vanish in the middle of every phase of a turn, many times over: each session's
tasks, threads and memory are released, and a session running beside them never stalls."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from tests.integration.conftest import healthz, running_server, wait_idle, wait_until

from ai_operator.client import VoiceClient, rtvi_message

ROUNDS = 3
PHASES = ["user-speaking", "stt", "llm", "tts"]
TASK_SLACK = 5  # asyncio tasks above the baseline still allowed once every session is gone
THREAD_SLACK = 2
RSS_GROWTH_LIMIT = 64 * 1024 * 1024  # generous: a session's audio and model buffers


@pytest.fixture(scope="module")
def server():
    with running_server(["--greeting", ""], name="disconnects") as server:
        yield server


async def converse(server, pcm: bytes) -> None:
    """One complete spoken turn, to warm up everything a session loads lazily."""
    async with VoiceClient(server.ws_url) as client:
        await client.ready()
        await client.stream(pcm)
        trailing = asyncio.create_task(client.silence(30))
        try:
            await client.wait_for(lambda r: bool(r.of("bot-stopped-speaking")), timeout=60)
        finally:
            trailing.cancel()


async def vanish(client: VoiceClient, *, abrupt: bool) -> None:
    """Leave: a close handshake, or a TCP reset with no goodbye at all."""
    if abrupt:
        client._ws.transport.abort()  # noqa: SLF001 - the point is to skip the handshake
    await client.close()


async def leave_during(server, pcm: bytes, phase: str, *, abrupt: bool) -> None:
    client = VoiceClient(server.ws_url)
    await client.__aenter__()
    trailing: asyncio.Task[None] | None = None
    try:
        await client.ready()
        if phase == "user-speaking":
            half = len(pcm) // 2 // 640 * 640
            await client.stream(pcm[:half])
            await client.wait_for(lambda r: bool(r.of("user-started-speaking")), timeout=10)
        else:
            await client.stream(pcm)
            trailing = asyncio.create_task(client.silence(30))
            if phase == "stt":  # the VAD has just closed the segment: Whisper is running
                await client.silence(0.3)
            else:
                event = {"llm": "bot-llm-text", "tts": "bot-started-speaking"}[phase]
                await client.wait_for(lambda r: bool(r.of(event)), timeout=60)
    finally:
        if trailing is not None:
            trailing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await trailing
        await vanish(client, abrupt=abrupt)


async def test_sessions_left_mid_turn_release_everything(server, question_pcm):
    # Warm up: what sessions load lazily (ONNX arenas, model threads) is the baseline.
    await converse(server, question_pcm)
    for phase in PHASES:
        await leave_during(server, question_pcm, phase, abrupt=False)
    baseline = (await wait_idle(server))["process"]

    async with VoiceClient(server.ws_url) as bystander:
        await bystander.ready()
        for round_ in range(ROUNDS):
            for phase in PHASES:
                await leave_during(server, question_pcm, phase, abrupt=not round_ % 2)
        # The bystander was never blocked: it still answers promptly.
        start = time.monotonic()
        await bystander.send(rtvi_message("send-text", {"content": "Say hello."}))
        await bystander.wait_for(
            lambda r: any(e.t >= start for e in r.of("bot-started-speaking")), timeout=30
        )

    after: dict = {}

    def settled() -> bool:
        nonlocal after
        body = healthz(server)
        after = body["process"]
        return (
            body["sessions"] == 0
            and after["tasks"] <= baseline["tasks"] + TASK_SLACK
            and after["threads"] <= baseline["threads"] + THREAD_SLACK
        )

    with contextlib.suppress(TimeoutError):
        await wait_until(settled, timeout=30, interval=0.5)
    assert after["tasks"] <= baseline["tasks"] + TASK_SLACK, (baseline, after)
    assert after["threads"] <= baseline["threads"] + THREAD_SLACK, (baseline, after)
    growth = after["rss_bytes"] - baseline["rss_bytes"]
    print(f"RSS {baseline['rss_bytes'] / 2**20:.0f} -> {after['rss_bytes'] / 2**20:.0f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MiB: {baseline} -> {after}"
    log = server.log()
    assert log.count("session over") >= 1 + len(PHASES) + 1 + ROUNDS * len(PHASES)
    assert "session on /ws" not in log  # no session failed with an exception
