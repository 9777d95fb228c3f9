"""Origin allowlist, token, static files, and API keys that never leave the server."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from tests.integration.conftest import running_server
from websockets.exceptions import InvalidStatus

from ai_operator.client import VoiceClient, audio_message, rtvi_message

TOKEN = "tok-SENTINEL-5e1f0c2a9b"
KEYS = {
    "OPENAI_API_KEY": "sk-SENTINEL-openai-4d2c8e7f1a",
    "DEEPGRAM_API_KEY": "dg-SENTINEL-3b9a6c2d8e",
    "CARTESIA_API_KEY": "ca-SENTINEL-7c1e5f9a2b",
}
SECRETS = [TOKEN, *KEYS.values()]
SECRET_ENV = {**KEYS, "AI_OPERATOR_TOKEN": TOKEN}
CLOSED_PORT = 1  # nothing listens there: every cloud request fails


@pytest.fixture(scope="module")
def server():
    env = {**SECRET_ENV, "AI_OPERATOR_FAULT_INJECT": "llm:raise:1"}
    with running_server([], env=env, name="security") as server:
        yield server


def with_token(server) -> str:
    return f"{server.ws_url}?token={TOKEN}"


# --- origin and token --------------------------------------------------------------------


async def test_a_foreign_origin_never_gets_a_socket(server):
    with pytest.raises(InvalidStatus) as err:
        async with VoiceClient(with_token(server), origin="http://evil.example"):
            pass
    assert err.value.response.status_code == 403
    assert "refused /ws from 127.0.0.1" in server.log()
    assert "origin 'http://evil.example' is not allowed" in server.log()

    own = f"http://127.0.0.1:{server.port}"
    async with VoiceClient(with_token(server), origin=own) as client:
        await client.ready()


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [("", {}), ("?token=wrong", {}), ("", {"Authorization": "Bearer wrong"})],
)
async def test_a_missing_or_wrong_token_is_refused_with_1008(server, suffix, headers):
    async with VoiceClient(server.ws_url + suffix, headers=headers) as client:
        await asyncio.wait_for(client.closed.wait(), timeout=10)
    assert client.close_code == 1008
    assert client.close_reason == "unauthorized: missing or wrong token"
    assert not client.recording.of("bot-ready")


async def test_the_token_works_as_a_header_or_a_query_parameter(server):
    async with VoiceClient(server.ws_url, headers={"Authorization": f"Bearer {TOKEN}"}) as a:
        await a.ready()
    async with VoiceClient(with_token(server)) as b:
        await b.ready()


# --- static files ------------------------------------------------------------------------


def raw_get(port: int, path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (no client-side normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/..%2Fserver.py",
        "/static/..%2fconfig.py",
        "/static/%2e%2e/%2e%2e/ai_operator/server.py",
        "/static/%2e%2e%2f%2e%2e%2fai_operator%2fserver.py",
        "/static/..%5cserver.py",
        "/static/....//server.py",
        "/static/%252e%252e%252fserver.py",
        "/static//etc/passwd",
        "/static/%2Fetc%2Fpasswd",
        "/static/..%00/server.py",
    ],
)
def test_static_files_cannot_escape_the_web_directory(server, path):
    status, body = raw_get(server.port, path)
    assert status in (400, 404), (status, body[:200])
    assert b"def create_app" not in body and b"Settings" not in body and b"root:" not in body


def test_the_page_itself_is_served(server):
    status, body = raw_get(server.port, "/static/index.html")
    assert status == 200 and b"<html" in body.lower()


# --- secrets -----------------------------------------------------------------------------


async def exercise(server, *, answer_timeout: float = 60) -> list[str]:
    """Use every surface, error paths included; returns everything the client received."""
    seen: list[str] = []
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        for path in ("/", "/healthz", "/static/index.html", "/metrics", "/nope"):
            response = await http.get(path)
            seen += [response.text, json.dumps(dict(response.headers))]
    async with VoiceClient(server.ws_url + "?token=wrong") as refused:
        await asyncio.wait_for(refused.closed.wait(), timeout=10)
    seen.append(refused.close_reason)

    async with VoiceClient(with_token(server)) as client:
        await client.ready()
        for bad in (b"\xff garbage", "text", audio_message(b"\x01"), b"\x12" + b"\0" * 70_000):
            await client.send(bad)
        for n in range(2):  # the first answer fails (fault injection), the second works
            start = time.monotonic()
            await client.send(rtvi_message("send-text", {"content": "Say hi."}, msg_id=f"s{n}"))
            await client.wait_for(
                lambda r, start=start: any(e.t > start for e in r.of("bot-stopped-speaking")),
                timeout=answer_timeout,
            )
    for event in client.recording.events:
        if event.kind != "audio":
            seen.append(json.dumps(event.data))
    seen.append(client.close_reason)
    return seen


def assert_no_secret(texts: list[str], where: str) -> None:
    blob = "\n".join(texts)
    leaked = [s for s in SECRETS if s in blob or s[-10:] in blob]
    assert not leaked, f"{leaked} found in {where}"


async def test_keys_never_reach_the_client_or_the_log(server):
    seen = await exercise(server)
    assert any("llm failed" in text for text in seen)  # the error path did run
    assert_no_secret(seen, "what the client received")
    assert_no_secret([server.log()], "the server log")


async def test_keys_never_leak_when_every_cloud_provider_fails():
    args = [
        "--stt", "deepgram", "--deepgram-base-url", f"ws://127.0.0.1:{CLOSED_PORT}",
        "--llm", "openai", "--openai-base-url", f"http://127.0.0.1:{CLOSED_PORT}/v1",
        "--tts", "cartesia", "--cartesia-base-url", f"ws://127.0.0.1:{CLOSED_PORT}",
    ]  # fmt: skip
    with running_server(args, env=SECRET_ENV, name="security-cloud") as server:
        seen = await exercise(server, answer_timeout=90)
        log = server.log()
    assert_no_secret(seen, "what the client received")
    assert_no_secret([log], "the server log")
