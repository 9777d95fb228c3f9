"""The session's guards, one at a time: guarded socket, reply watchdog, STT deadline, faults."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    ErrorFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    UserStartedSpeakingFrame,
)
from pipecat.frames.protobufs import frames_pb2
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import LLMService
from pipecat.services.stt_service import SegmentedSTTService
from starlette.websockets import WebSocket

from ai_operator.connection import ABORT_SCOPE_KEY, GuardedWebSocket
from ai_operator.errors import ProviderError
from ai_operator.faults import Fault, inject_faults, parse_faults
from ai_operator.protocol import encode_message, rtvi_error
from ai_operator.security import InputRateLimiter
from ai_operator.watchdog import ReplyWatchdog, bound_transcription

LOG = logging.LoggerAdapter(logging.getLogger("test"), {"session": "test"})


# --- GuardedWebSocket --------------------------------------------------------------------


class FakeASGI:
    """The server side of one connection: queued client messages, recorded sends."""

    def __init__(self, *, stall_sends: bool = False) -> None:
        self.incoming: asyncio.Queue[dict] = asyncio.Queue()
        self.sent: list[dict] = []
        self.stall_sends = stall_sends
        self.aborted = asyncio.Event()

    async def receive(self) -> dict:
        return await self.incoming.get()

    async def send(self, message: dict) -> None:
        if self.stall_sends and message["type"] != "websocket.accept":
            await asyncio.Event().wait()  # a client that never reads
        self.sent.append(message)


async def guarded_socket(asgi: FakeASGI, *, send_timeout: float = 1.0, rate: int = 10):
    scope = {"type": "websocket", "path": "/ws", "headers": [], ABORT_SCOPE_KEY: asgi.aborted.set}
    websocket = WebSocket(scope, asgi.receive, asgi.send)
    await asgi.incoming.put({"type": "websocket.connect"})
    await websocket.accept()
    ended: list[str] = []
    guarded = GuardedWebSocket(
        websocket,
        limiter=InputRateLimiter(messages_per_sec=rate, bytes_per_sec=1 << 20),
        send_timeout_secs=send_timeout,
        encode=encode_message,
        notice=lambda reason: rtvi_error(f"session closed: {reason}", fatal=True),
        on_end=ended.append,
        log=LOG,
    )
    return guarded, ended


async def test_flood_gets_an_error_then_close_1008():
    asgi = FakeASGI()
    guarded, ended = await guarded_socket(asgi, rate=10)
    for _ in range(100):
        asgi.incoming.put_nowait({"type": "websocket.receive", "bytes": b"x"})
    received = [await guarded.receive() for _ in range(21)]
    assert [m["type"] for m in received[:20]] == ["websocket.receive"] * 20  # the 2 s burst
    assert received[20]["type"] == "websocket.disconnect"
    assert (await guarded.receive())["type"] == "websocket.disconnect"  # and stays so
    assert len(ended) == 1 and "rate limit" in ended[0]

    notice = json.loads(frames_pb2.Frame.FromString(asgi.sent[-1]["bytes"]).message.data)
    assert notice["type"] == "error" and notice["data"]["fatal"] is True
    assert "rate limit exceeded" in notice["data"]["error"]

    await guarded.close()  # what Pipecat calls, with no arguments
    close = asgi.sent[-1]
    assert close["type"] == "websocket.close" and close["code"] == 1008
    assert "rate limit exceeded" in close["reason"]
    assert guarded.outcome().startswith("closed by us (1008 rate limit exceeded")


async def test_a_client_that_left_is_not_sent_a_close():
    asgi = FakeASGI()
    guarded, ended = await guarded_socket(asgi)
    asgi.incoming.put_nowait({"type": "websocket.disconnect", "code": 1001, "reason": "bye"})
    assert (await guarded.receive())["type"] == "websocket.disconnect"
    sent = len(asgi.sent)
    await guarded.close()
    assert len(asgi.sent) == sent and ended == []
    assert guarded.outcome() == "disconnected (1001 bye)"


async def test_client_that_never_reads_is_dropped_after_the_send_timeout():
    asgi = FakeASGI(stall_sends=True)
    guarded, ended = await guarded_socket(asgi, send_timeout=0.2)
    with pytest.raises(ConnectionAbortedError):
        await guarded.send_bytes(b"audio")
    assert asgi.aborted.is_set()
    assert guarded.ended and guarded.close_code == 1008
    assert len(ended) == 1 and "has not read" in ended[0]
    with pytest.raises(ConnectionAbortedError):  # nothing more is attempted
        await guarded.send_bytes(b"more")
    await asyncio.wait_for(guarded.close(), timeout=1)  # returns at once: the socket is gone


async def test_plain_close_is_normal_and_end_decides_the_code():
    asgi = FakeASGI()
    guarded, _ = await guarded_socket(asgi)
    await guarded.send_text("hello")
    assert asgi.sent[-1] == {"type": "websocket.send", "text": "hello"}
    await guarded.end(1000, "idle for 300 s")
    await guarded.close(1011, "ignored: the session already decided")
    assert asgi.sent[-1]["code"] == 1000 and asgi.sent[-1]["reason"] == "idle for 300 s"


# --- ReplyWatchdog -----------------------------------------------------------------------


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.event = asyncio.Event()

    async def __call__(self, stage: str, cause: str) -> None:
        self.calls.append((stage, cause))
        self.event.set()

    async def wait(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        await asyncio.wait_for(self.event.wait(), timeout)


def watchdog(timeout: float = 0.1) -> tuple[ReplyWatchdog, Calls]:
    calls = Calls()
    return ReplyWatchdog(timeout_secs=timeout, on_no_reply=calls, log=LOG), calls


class StallingSTT(SegmentedSTTService):
    async def run_stt(self, audio: bytes):
        await asyncio.Event().wait()
        yield None


def llm() -> LLMService:
    return object.__new__(LLMService)


def context_frame() -> LLMContextFrame:
    return LLMContextFrame(context=LLMContext())


async def test_a_late_reply_is_reported_once():
    dog, calls = watchdog(0.05)
    await dog.observe(context_frame())
    await dog.observe(LLMTextFrame("The capital"))
    await calls.wait()
    assert calls.calls == [("tts", "timeout")]  # text came, audio did not
    assert not dog.armed


async def test_a_late_reply_says_how_far_it_got(caplog):
    dog, calls = watchdog(0.05)
    await dog.observe(context_frame())
    await dog.observe(LLMTextFrame("The moon"))
    await dog.observe(LLMTextFrame(" is far."))
    await dog.observe(LLMFullResponseEndFrame())
    with caplog.at_level(logging.WARNING, logger="test"):
        await calls.wait()
    assert calls.calls == [("tts", "timeout")]
    line = caplog.records[-1].getMessage()
    assert "no reply: tts timeout" in line
    assert "16 characters, finished; the TTS started 0 phrase(s)" in line

    dog, calls = watchdog(0.05)
    await dog.observe(context_frame())
    await dog.observe(LLMTextFrame("The"))
    await dog.observe(TTSStartedFrame())
    with caplog.at_level(logging.WARNING, logger="test"):
        await calls.wait()
    line = caplog.records[-1].getMessage()
    assert "3 characters, unfinished; the TTS started 1 phrase(s)" in line


async def test_audio_or_a_new_user_turn_disarms():
    for frame in (
        TTSAudioRawFrame(audio=b"\0\0", sample_rate=16000, num_channels=1),
        BotStartedSpeakingFrame(),
        UserStartedSpeakingFrame(),
    ):
        dog, calls = watchdog(0.05)
        await dog.observe(context_frame())
        await dog.observe(frame)
        assert not dog.armed
        with pytest.raises(TimeoutError):
            await calls.wait(timeout=0.3)


async def test_empty_reply_and_stage_errors_fire_at_once():
    dog, calls = watchdog(30)
    await dog.observe(context_frame())
    await dog.observe(LLMTextFrame("  "))
    await dog.observe(LLMFullResponseEndFrame())
    assert calls.calls == [("llm", "empty")]

    dog, calls = watchdog(30)
    await dog.observe(context_frame())
    await dog.observe(ErrorFrame(error="not a stage", processor=None))
    assert calls.calls == []
    await dog.observe(ErrorFrame(error="boom", processor=llm()))
    await dog.observe(ErrorFrame(error="boom again", processor=llm()))
    assert calls.calls == [("llm", "error")]
    dog.close()


async def test_failed_transcription_is_apologised_for_at_most_every_few_seconds():
    dog, calls = watchdog(30)
    stt = object.__new__(StallingSTT)
    await dog.observe(ErrorFrame(error="whisper failed", processor=stt))
    await dog.observe(ErrorFrame(error="whisper failed", processor=stt))
    assert calls.calls == [("stt", "error")]


# --- STT deadline ------------------------------------------------------------------------


async def test_a_stalled_transcription_becomes_a_retryable_error():
    stt = object.__new__(StallingSTT)
    bound_transcription(stt, deadline_secs=0.1)
    with pytest.raises(ProviderError) as err:
        async for _ in stt.run_stt(b"\0\0"):
            pass
    assert err.value.retryable and "no transcript after" in str(err.value)


def test_streaming_services_are_left_alone():
    stt = SimpleNamespace(run_stt="untouched")
    bound_transcription(stt, deadline_secs=0.1)
    assert stt.run_stt == "untouched"


# --- fault injection ---------------------------------------------------------------------


def test_fault_spec_parsing():
    assert parse_faults("") == []
    assert parse_faults("llm:raise, tts:stall:1") == [
        Fault("llm", "raise"),
        Fault("tts", "stall", 1),
    ]
    for bad in ("llm", "llm:explode", "gpu:raise", "stt:empty:x"):
        with pytest.raises(ValueError, match="AI_OPERATOR_FAULT_INJECT"):
            parse_faults(bad)


class FakeServices:
    def __init__(self) -> None:
        self.stt = SimpleNamespace(run_stt=self._words)
        self.llm = SimpleNamespace(get_chat_completions=self._completions)
        self.tts = SimpleNamespace(run_tts=self._words)

    @staticmethod
    async def _words(*_args):
        yield "word"

    @staticmethod
    async def _completions(*_args):
        return "stream"


async def collect(gen) -> list:
    return [item async for item in gen]


async def test_faults_fire_the_given_number_of_times_then_the_stage_works():
    services = FakeServices()
    inject_faults(services, parse_faults("stt:raise:1,tts:empty:2,llm:raise:1"))
    with pytest.raises(ProviderError, match="injected fault"):
        await collect(services.stt.run_stt(b""))
    assert await collect(services.stt.run_stt(b"")) == ["word"]
    assert await collect(services.tts.run_tts("hi", "ctx")) == []
    assert await collect(services.tts.run_tts("hi", "ctx")) == []
    assert await collect(services.tts.run_tts("hi", "ctx")) == ["word"]
    with pytest.raises(ProviderError):
        await services.llm.get_chat_completions(None)
    assert await services.llm.get_chat_completions(None) == "stream"


async def test_stall_and_empty_llm_streams():
    services = FakeServices()
    inject_faults(services, parse_faults("llm:empty:1,llm:stall:1"))
    assert await collect(await services.llm.get_chat_completions(None)) == []
    stalled = await services.llm.get_chat_completions(None)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(collect(stalled), timeout=0.2)
