"""Bad input, floods, clients that never read, too many sessions, idle sessions.

Each misbehaviour gets a clear RTVI error or a close with a meaningful code and reason, and
a log line; the server and the other sessions keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest
import websockets
from pipecat.frames.protobufs import frames_pb2
from tests.integration.conftest import (
    LONG_GREETING,
    RawWebSocket,
    healthz,
    running_server,
    wait_idle,
    wait_until,
)

from ai_operator.audio import AUDIBLE_RMS, rms_int16
from ai_operator.client import CLIENT_READY, VoiceClient, audio_message, rtvi_message

SEND_TIMEOUT_SECS = 2
IDLE_TIMEOUT_SECS = 8
MAX_SESSIONS = 3


@pytest.fixture(scope="module")
def server():
    args = [
        "--greeting", LONG_GREETING,
        "--max-sessions", str(MAX_SESSIONS),
        "--rate-limit-messages", "100",
        "--rate-limit-bytes", str(128 * 1024),
        "--send-timeout-secs", str(SEND_TIMEOUT_SECS),
        "--idle-timeout-secs", str(IDLE_TIMEOUT_SECS),
    ]  # fmt: skip
    with running_server(args, name="limits") as server:
        yield server


@pytest.fixture(autouse=True)
async def no_sessions_left(server):
    """Each test starts on a server with no session still closing from the last one."""
    await wait_idle(server)


def _proto(kind: str) -> bytes:
    frame = frames_pb2.Frame()
    if kind == "text":
        frame.text.text = "hello"
    elif kind == "bad-json":
        frame.message.data = "{not json"
    elif kind == "not-rtvi":
        frame.message.data = '{"label": "someone-else", "type": "x", "id": "1"}'
    return bytes(frame.SerializeToString())


# (message, words expected in the error the client gets back)
BAD_MESSAGES = [
    (b"\xff\x00 definitely not protobuf", "not a Pipecat protobuf frame"),
    ("a text message", "expected binary protobuf frames"),
    (b"", "no known kind"),
    (_proto("text"), "may not send 'text' frames"),
    (audio_message(b""), "no samples"),
    (audio_message(b"\x01\x02\x03"), "not a whole number"),
    (audio_message(b"\0\0" * 320, sample_rate=11025), "unsupported sample rate 11025"),
    (audio_message(b"\0\0" * 320, channels=6), "unsupported channel count 6"),
    (b"\x12" + b"\0" * (100 * 1024), "exceeds the 65536 byte limit"),
    (_proto("bad-json"), "not valid JSON"),
    (_proto("not-rtvi"), "label must be 'rtvi-ai'"),
    (rtvi_message("raw-audio", {"base64Audio": "AAAA"}), "unsupported message type 'raw-audio'"),
]


async def test_each_bad_message_gets_a_clear_error_and_the_session_lives_on(server):
    async with VoiceClient(server.ws_url) as client:
        for message, expected in BAD_MESSAGES:
            await client.send(message)
            await client.wait_for(
                lambda r, expected=expected: any(
                    expected in str(e.data.get("error")) for e in r.of("error")
                ),
                timeout=10,
            )
        # Audio in other formats is converted, not refused.
        before = len(client.recording.of("error"))
        await client.send(audio_message(b"\0\0" * 960 * 2, sample_rate=48000, channels=2))
        await client.send(audio_message(b"\0\0" * 160, sample_rate=8000))
        await client.send(rtvi_message("client-ready", CLIENT_READY))
        await client.wait_for(lambda r: bool(r.of("bot-ready")), timeout=15)
        assert len(client.recording.of("error")) == before
        assert not client.closed.is_set()
    log = server.log()
    assert "rejected client message: not a Pipecat protobuf frame" in log
    assert "exception receiving data" not in log  # nothing reached Pipecat's catch-all


async def test_a_message_over_the_transport_limit_closes_with_1009(server):
    async with VoiceClient(server.ws_url) as client:
        # The server refuses the frame on its header and closes while the rest is still
        # in flight; closing with unread bytes resets the TCP connection, which can reach
        # the client before the 1009 close frame does (then it sees 1006).
        with contextlib.suppress(websockets.ConnectionClosed, ConnectionResetError):
            await client.send(b"\x12" + b"\0" * (2 * 1024 * 1024))
        await asyncio.wait_for(client.closed.wait(), timeout=10)
    assert client.close_code in (1009, 1006)
    await wait_idle(server)
    # websockets words it "frame with N bytes exceeds ..." when it knows N up front.
    assert re.search(
        r"session over: disconnected \(1009 frame (with \d+ bytes )?"
        r"exceeds limit of 1048576 bytes\)",
        server.log(),
    )


async def test_a_flood_gets_an_error_then_close_1008_and_others_carry_on(server):
    async with VoiceClient(server.ws_url) as bystander, VoiceClient(server.ws_url) as flood:
        await bystander.ready()
        await bystander.wait_for(lambda r: bool(r.of("bot-started-speaking")), timeout=30)
        tiny = audio_message(b"\0\0")
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(1000):
                await flood.send(tiny)
        await asyncio.wait_for(flood.closed.wait(), timeout=10)
        assert flood.close_code == 1008
        assert "rate limit exceeded" in flood.close_reason
        errors = [str(e.data.get("error")) for e in flood.recording.of("error")]
        assert any("rate limit exceeded: more than 100 messages per second" in e for e in errors)

        # The other session still streams its greeting and is still open.
        heard = len(bystander.recording.of("audio"))
        await bystander.wait_for(lambda r: len(r.of("audio")) > heard + 10, timeout=10)
        assert not bystander.closed.is_set()
    log = server.log()
    assert "ending session: rate limit exceeded" in log
    assert "session over: closed by us (1008 rate limit exceeded" in log


async def test_a_client_that_never_reads_is_dropped(server):
    async with VoiceClient(server.ws_url) as bystander:
        await bystander.ready()
        stalled = RawWebSocket(server.port, recv_buffer=4096)
        try:
            assert stalled.status == 101
            stalled.send(rtvi_message("client-ready", CLIENT_READY))  # the greeting starts
            await wait_until(lambda: healthz(server)["sessions"] == 2, timeout=10)
            # ~20 s of greeting cannot fit in the socket buffers: the send blocks, times out,
            # and the session ends long before the greeting would have.
            await wait_until(lambda: healthz(server)["sessions"] == 1, timeout=25)
            # The server reset the connection rather than leave the buffered audio queued.
            assert stalled.drain_until_closed() == "reset"
        finally:
            stalled.close()
        assert "client has not read for 2 s" in server.log()
        audio = bystander.recording.audio_bytes()
        assert rms_int16(audio) > AUDIBLE_RMS and not bystander.closed.is_set()


async def test_sessions_beyond_the_limit_are_refused_with_1013(server):
    clients = [VoiceClient(server.ws_url) for _ in range(MAX_SESSIONS + 1)]
    try:
        for client in clients[:MAX_SESSIONS]:
            await client.__aenter__()
        await wait_until(lambda: healthz(server)["sessions"] == MAX_SESSIONS, timeout=10)
        extra = clients[MAX_SESSIONS]
        await extra.__aenter__()
        await asyncio.wait_for(extra.closed.wait(), timeout=10)
        assert extra.close_code == 1013
        assert f"server busy: all {MAX_SESSIONS} sessions in use" in extra.close_reason
        assert not any(c.closed.is_set() for c in clients[:MAX_SESSIONS])

        await clients[0].close()
        await wait_until(lambda: healthz(server)["sessions"] == MAX_SESSIONS - 1, timeout=10)
        async with VoiceClient(server.ws_url) as again:
            await again.ready()
    finally:
        for client in clients:
            await client.close()
    assert "refused /ws from 127.0.0.1" in server.log()


async def test_an_idle_session_is_closed_with_a_reason(server):
    async with VoiceClient(server.ws_url) as client:
        await asyncio.wait_for(client.closed.wait(), timeout=IDLE_TIMEOUT_SECS + 15)
    assert client.close_code == 1000
    assert client.close_reason == f"idle for {IDLE_TIMEOUT_SECS} s"
    errors = [e.data for e in client.recording.of("error")]
    assert {"error": f"session closed: idle for {IDLE_TIMEOUT_SECS} s", "fatal": True} in errors
