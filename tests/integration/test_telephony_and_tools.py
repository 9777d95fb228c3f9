"""Phone calls as Twilio makes them, and the LLM's tools through a fake OpenAI server.

The call client speaks Twilio Media Streams exactly as documented (`connected`, `start`,
base64 8 kHz mu-law `media`, `stop`) with real speech; the LLM is the fake OpenAI server,
which streams tool calls in OpenAI's real format.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
import time
from typing import Any

import httpx
import numpy as np
import pytest
import soxr
import websockets

from ai_operator.client import VoiceClient
from ai_operator.speech import synthesize_pcm16k
from ai_operator.telephony import twilio_signature
from conftest import ServerProcess
from fakes.harness import TURN_TIMEOUT, greeted, turn
from fakes.openai import FakeOpenAI, Reply, ToolCall, last_user_text

TWILIO_TOKEN = "twilio-test-auth-token"
PUBLIC = "https://operator.example.com"
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
MULAW_BIAS, MULAW_CLIP = 0x84, 32635


def mulaw_encode(pcm16: np.ndarray) -> bytes:
    """G.711 mu-law, as Twilio sends it."""
    x = pcm16.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    x = np.minimum(np.abs(x), MULAW_CLIP) + MULAW_BIAS
    exponent = np.clip(np.floor(np.log2(x)).astype(np.int32) - 7, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def mulaw_rms(data: bytes) -> float:
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    exponent, mantissa = (u >> 4) & 7, u & 0x0F
    x = (((mantissa << 3) + MULAW_BIAS) << exponent) - MULAW_BIAS
    x = np.where(u & 0x80, -x, x).astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def to_call_audio(text: str) -> bytes:
    pcm = np.frombuffer(synthesize_pcm16k(text), dtype=np.int16).astype(np.float32)
    return mulaw_encode(np.clip(soxr.resample(pcm, 16000, 8000), -32768, 32767))


class TwilioCall:
    """One call's media stream, as Twilio's side of it."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()
        self.closed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())
        self.stream_sid = "MZ" + "0" * 32

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.events.append((time.monotonic(), json.loads(raw)))
                self.changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self.changed.set()

    async def start(self) -> None:
        await self.ws.send(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await self.ws.send(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "start": {
                        "accountSid": "AC" + "1" * 32,
                        "streamSid": self.stream_sid,
                        "callSid": "CA" + "2" * 32,
                        "tracks": ["inbound"],
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                        "customParameters": {"from": "+15550100"},
                    },
                    "streamSid": self.stream_sid,
                }
            )
        )

    async def say(self, ulaw: bytes) -> float:
        start = time.monotonic()
        for i in range(0, len(ulaw), FRAME_BYTES):
            chunk = ulaw[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
            payload = base64.b64encode(chunk).decode()
            message = {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"payload": payload},
            }
            with contextlib.suppress(websockets.ConnectionClosed):
                await self.ws.send(json.dumps(message))
            await asyncio.sleep(max(0.0, start + (i // FRAME_BYTES + 1) * 0.02 - time.monotonic()))
        return time.monotonic()

    async def silence(self, secs: float) -> None:
        await self.say(b"\xff" * int(secs * 8000))

    def media_after(self, t: float) -> list[bytes]:
        return [
            base64.b64decode(e["media"]["payload"])
            for when, e in self.events
            if when >= t and e.get("event") == "media"
        ]

    def audible_after(self, t: float) -> bool:
        return any(mulaw_rms(p) > 300 for p in self.media_after(t))

    async def wait_for(self, predicate: Any, timeout: float) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def fake_openai():
    fake = FakeOpenAI().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def phone_server(fake_openai):
    server = ServerProcess(
        ["--llm", "openai", "--openai-base-url", fake_openai.base_url, "--public-url", PUBLIC],
        env={"OPENAI_API_KEY": "test-openai-key", "TWILIO_AUTH_TOKEN": TWILIO_TOKEN},
        name="phone",
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_incoming_call_webhook_returns_a_stream_and_checks_signatures(phone_server):
    form = {"CallSid": "CA123", "From": "+15550100", "To": "+15550199"}
    signature = twilio_signature(TWILIO_TOKEN, f"{PUBLIC}/twilio/voice", form)
    ok = httpx.post(
        f"{phone_server.base_url}/twilio/voice",
        data=form,
        headers={"X-Twilio-Signature": signature},
    )
    assert ok.status_code == 200 and "xml" in ok.headers["content-type"]
    assert '<Stream url="wss://operator.example.com/twilio/stream">' in ok.text
    forged = httpx.post(
        f"{phone_server.base_url}/twilio/voice", data=form, headers={"X-Twilio-Signature": "bad"}
    )
    assert forged.status_code == 403


async def test_a_call_converses_barges_in_and_hangs_up_through_the_end_call_tool(
    phone_server, fake_openai
):
    long_answer = " ".join(
        f"Here is fact number {n} about the city of Paris, which is lovely in spring."
        for n in range(1, 9)
    )

    def respond(body: dict[str, Any]) -> Reply:
        """Like a real model: the reply depends on what the caller said last."""
        heard = last_user_text(body.get("messages", [])).lower()
        if "goodbye" in heard or "bye" in heard:
            return Reply(tool_calls=[ToolCall("end_call", {"goodbye": "Thanks for calling!"})])
        if "paris" in heard:
            return Reply(text=long_answer)
        return Reply(text="Sure, what would you like to know?")

    fake_openai.responder = respond
    headers = {
        "X-Twilio-Signature": twilio_signature(
            TWILIO_TOKEN, PUBLIC.replace("https", "wss") + "/twilio/stream"
        )
    }
    async with websockets.connect(
        f"ws://127.0.0.1:{phone_server.port}/twilio/stream", additional_headers=headers
    ) as ws:
        call = TwilioCall(ws)
        await call.start()
        opened = time.monotonic()
        # The greeting is spoken as mu-law media for this stream.
        await call.wait_for(lambda: call.audible_after(opened), timeout=TURN_TIMEOUT)
        assert all(e.get("streamSid") == call.stream_sid for _, e in call.events)
        await call.silence(4.0)

        asked = await call.say(to_call_audio("Tell me everything about Paris."))
        mic = asyncio.create_task(call.silence(6.0))
        await call.wait_for(lambda: call.audible_after(asked + 0.1), timeout=TURN_TIMEOUT)
        await mic

        # Barge in while the long answer plays: Twilio is told to clear its buffer.
        interrupted = await call.say(to_call_audio("Wait, stop, I have another question."))
        mic = asyncio.create_task(call.silence(6.0))
        await call.wait_for(
            lambda: any(e.get("event") == "clear" and w >= interrupted - 3 for w, e in call.events),
            timeout=TURN_TIMEOUT,
        )
        await mic

        # Goodbye: the LLM calls end_call; the goodbye is spoken, then the call is hung up.
        said_bye = await call.say(to_call_audio("Goodbye."))
        mic = asyncio.create_task(call.silence(15.0))
        await asyncio.wait_for(call.closed.wait(), timeout=TURN_TIMEOUT)
        mic.cancel()
        assert call.audible_after(said_bye), "the goodbye was not spoken before hanging up"

    requests = [m for r in fake_openai.requests for m in r.messages]
    assert any("end_call" in json.dumps(body.get("tools", [])) for body in requests)
    log = phone_server.log()
    assert "call CA" in log and TWILIO_TOKEN not in log


async def test_time_and_take_message_tools_through_the_fake_llm(phone_server, fake_openai):
    def respond(body: dict[str, Any]) -> Reply:
        """Like a real model: a tool call for what the caller asked, then an answer from the
        tool's result. (Not a fixed script: an answer started before the end of the turn
        on other words, then withdrawn, would take the script's tool call.)"""
        messages = body.get("messages", [])
        if messages and messages[-1].get("role") == "tool":
            saved = "saved" in str(messages[-1].get("content"))
            return Reply(text="I have taken your message." if saved else "It is noon.")
        heard = last_user_text(messages).lower()
        if "message" in heard:
            message = {
                "message": "Please call Bob back",
                "caller_name": "Ann",
                "callback_number": "+15550143",
            }
            return Reply(tool_calls=[ToolCall("take_message", message)])
        if "time" in heard:
            return Reply(tool_calls=[ToolCall("get_current_time", {})])
        return Reply(text="Sure.")

    fake_openai.responder = respond
    async with VoiceClient(f"{phone_server.ws_url}") as client:
        await greeted(client)
        await turn(client, synthesize_pcm16k("What time is it?"))
        await turn(client, synthesize_pcm16k("Please take a message for Bob."))
    # The time tool's result went back to the LLM as a tool message with today's date.
    bodies = [m for r in fake_openai.requests for m in r.messages]
    tool_results = [
        msg["content"]
        for body in bodies
        for msg in body.get("messages", [])
        if msg.get("role") == "tool"
    ]
    today = time.strftime("%Y", time.gmtime())
    assert any(today in str(c) and "timezone" in str(c) for c in tool_results), tool_results
    # The message is stored with the transcript (written before the reply was spoken).
    with sqlite3.connect(phone_server.history_path) as db:
        rows = db.execute("SELECT caller_name, callback, body FROM messages").fetchall()
    assert rows == [("Ann", "+15550143", "Please call Bob back")]
