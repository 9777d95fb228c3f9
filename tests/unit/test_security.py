"""Access policy, rate limiting, secret redaction and the client-message allowlist."""

from __future__ import annotations

import json
import logging

import pytest
from pipecat.frames.frames import OutputTransportMessageUrgentFrame
from pipecat.frames.protobufs import frames_pb2

from ai_operator.client import rtvi_message
from ai_operator.config import load_settings
from ai_operator.protocol import (
    MAX_SEND_TEXT_CHARS,
    GuardedProtobufSerializer,
    InputRejected,
    check_rtvi_message,
)
from ai_operator.security import (
    MAX_CLOSE_REASON_BYTES,
    REDACTED,
    AccessPolicy,
    InputRateLimiter,
    SecretRedactor,
    TokenBucket,
    close_reason,
    is_loopback_host,
)


def policy(**overrides):
    return AccessPolicy(load_settings({"port": 8000, **overrides}, env_file=None))


# --- origin ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:8000",
        "http://127.0.0.1:8000",
        "http://[::1]:8000",
        "https://localhost:8000",
        "HTTP://LOCALHOST:8000/",
    ],
)
def test_own_port_on_loopback_is_allowed(origin):
    assert policy().check({"origin": origin, "host": "localhost:8000"}, {}) is None


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost:9999",  # another app on this machine
        "http://localhost",
        "null",  # sandboxed iframes, file:// pages
        "file://",
        "http://localhost.evil.example:8000",
        "",
    ],
)
def test_other_origins_are_refused(origin):
    refusal = policy().check({"origin": origin, "host": "localhost:8000"}, {})
    assert refusal is not None and refusal.check == "origin"
    assert "not allowed" in refusal.reason


def test_no_origin_means_not_a_browser_and_is_allowed():
    assert policy().check({"host": "localhost:8000"}, {}) is None


def test_page_loaded_by_ip_may_connect_to_itself():
    p = policy(host="0.0.0.0")
    assert p.check({"origin": "http://192.168.1.20:8000", "host": "192.168.1.20:8000"}, {}) is None


def test_dns_names_do_not_get_same_origin_so_rebinding_fails():
    # evil.example resolving to 127.0.0.1: Host and Origin agree, but it is not our name.
    p = policy(host="0.0.0.0")
    refusal = p.check({"origin": "http://evil.example:8000", "host": "evil.example:8000"}, {})
    assert refusal is not None and refusal.check == "origin"


def test_configured_host_and_listed_origins_are_allowed():
    p = policy(host="voice.lan", allowed_origins="https://app.example.com, http://x.test:3000")
    assert p.check({"origin": "http://voice.lan:8000"}, {}) is None
    assert p.check({"origin": "https://app.example.com"}, {}) is None
    assert p.check({"origin": "http://x.test:3000/"}, {}) is None
    assert p.check({"origin": "https://other.example.com"}, {}) is not None


def test_star_allows_any_origin():
    assert policy(allowed_origins="*").check({"origin": "http://anything.test"}, {}) is None


# --- token -------------------------------------------------------------------------------


def test_token_via_bearer_header_or_query():
    p = policy(token="s3cret-token")
    assert p.check({"authorization": "Bearer s3cret-token"}, {}) is None
    assert p.check({"authorization": "bearer s3cret-token"}, {}) is None
    assert p.check({}, {"token": "s3cret-token"}) is None


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, {}),
        ({"authorization": "Bearer wrong"}, {}),
        ({"authorization": "Basic s3cret-token"}, {}),
        ({}, {"token": "s3cret-token-and-more"}),
        ({}, {"token": ""}),
    ],
)
def test_missing_or_wrong_token_is_refused(headers, query):
    refusal = policy(token="s3cret-token").check(headers, query)
    assert refusal is not None and refusal.check == "token"
    assert "s3cret" not in refusal.reason


def test_origin_is_checked_before_the_token():
    refusal = policy(token="t0ken-value").check({"origin": "http://evil.example"}, {})
    assert refusal is not None and refusal.check == "origin"


# --- rate limiting -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_its_rate_up_to_the_burst():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=20, clock=clock)
    assert all(bucket.take() for _ in range(20))
    assert not bucket.take()
    clock.now += 0.5
    assert sum(bucket.take() for _ in range(10)) == 5
    clock.now += 100
    assert sum(bucket.take() for _ in range(100)) == 20


def test_rate_limiter_allows_a_microphone_stream_indefinitely():
    clock = FakeClock()
    limiter = InputRateLimiter(messages_per_sec=200, bytes_per_sec=256 * 1024, clock=clock)
    for _ in range(50 * 60):  # a minute of 20 ms frames of 48 kHz stereo
        assert limiter.admit(3840 + 20) is None
        clock.now += 0.02


def test_rate_limiter_stops_floods_of_tiny_messages_and_of_bytes():
    clock = FakeClock()
    limiter = InputRateLimiter(messages_per_sec=100, bytes_per_sec=64 * 1024, clock=clock)
    verdicts = [limiter.admit(2) for _ in range(1000)]
    first = next(i for i, v in enumerate(verdicts) if v is not None)
    assert first == 200  # the 2 s burst
    assert "messages per second" in str(verdicts[first])

    limiter = InputRateLimiter(messages_per_sec=100, bytes_per_sec=64 * 1024, clock=clock)
    assert limiter.admit(64 * 1024) is None
    assert limiter.admit(64 * 1024) is None
    assert "bytes per second" in str(limiter.admit(64 * 1024))


def test_close_reason_fits_a_control_frame():
    assert close_reason("short") == "short"
    long = "é" * 200
    cut = close_reason(long)
    assert len(cut.encode()) <= MAX_CLOSE_REASON_BYTES and cut.startswith("éé")


# --- secrets -----------------------------------------------------------------------------


def test_redactor_collects_every_secret_setting(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-SENTINEL-openai-0001")
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-SENTINEL-0002")
    monkeypatch.setenv("CARTESIA_API_KEY", "ca-SENTINEL-0003")
    monkeypatch.setenv("AI_OPERATOR_TOKEN", "tok-SENTINEL-0004")
    redactor = SecretRedactor.from_settings(load_settings(env_file=None))
    text = "sk-SENTINEL-openai-0001 dg-SENTINEL-0002 ca-SENTINEL-0003 tok-SENTINEL-0004"
    assert redactor.text(text) == " ".join([REDACTED] * 4)


def test_redactor_walks_json_and_ignores_tiny_secrets():
    redactor = SecretRedactor(["sk-abcdef123", "abc"])
    value = {"error": "key sk-abcdef123 rejected", "list": ["x sk-abcdef123"], "n": 3}
    assert redactor.value(value) == {
        "error": f"key {REDACTED} rejected",
        "list": [f"x {REDACTED}"],
        "n": 3,
    }
    assert redactor.text("abc") == "abc"
    assert not SecretRedactor([])


def test_loguru_patcher_redacts_pipecat_logs():
    from loguru import logger

    lines: list[str] = []
    redactor = SecretRedactor(["sk-abcdef123"])
    sink = logger.bind().patch(redactor.loguru_patcher())
    handler = logger.add(lines.append, format="{message}")
    try:
        sink.error("auth failed for sk-abcdef123")
    finally:
        logger.remove(handler)
    assert lines == [f"auth failed for {REDACTED}\n"]


def test_redacting_log_filter():
    redactor = SecretRedactor(["sk-abcdef123"])
    record = logging.LogRecord("x", logging.INFO, "f", 1, "key %s failed", ("sk-abcdef123",), None)
    assert redactor.log_filter().filter(record)
    assert record.getMessage() == f"key {REDACTED} failed"


async def test_serializer_redacts_outgoing_messages():
    async def on_reject(kind: str, message: str) -> None:
        pass

    ser = GuardedProtobufSerializer(
        max_message_bytes=4096,
        on_reject=on_reject,
        redact=SecretRedactor(["sk-abcdef123"]).value,
    )
    frame = OutputTransportMessageUrgentFrame(message={"data": {"error": "bad key sk-abcdef123"}})
    data = await ser.serialize(frame)
    sent = json.loads(frames_pb2.Frame.FromString(data).message.data)
    assert sent == {"data": {"error": f"bad key {REDACTED}"}}


# --- what clients may send ---------------------------------------------------------------


def _data(raw: bytes) -> str:
    return frames_pb2.Frame.FromString(raw).message.data


@pytest.mark.parametrize("msg_type", ["client-ready", "send-text", "disconnect-bot"])
def test_supported_rtvi_messages_pass(msg_type):
    data = {"content": "hi"} if msg_type == "send-text" else None
    check_rtvi_message(_data(rtvi_message(msg_type, data)))


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ({"label": "rtvi-ai", "type": "raw-audio", "id": "1", "data": {}}, "unsupported-message"),
        ({"label": "rtvi-ai", "type": "send-file", "id": "1", "data": {}}, "unsupported-message"),
        ({"label": "rtvi-ai", "type": ["x"], "id": "1"}, "unsupported-message"),
        ({"label": "other", "type": "client-ready", "id": "1"}, "bad-rtvi"),
        ({"label": "rtvi-ai", "type": "client-ready", "id": 7}, "bad-rtvi"),
        ({"label": "rtvi-ai", "type": "client-ready", "id": "1", "data": [1]}, "bad-rtvi"),
        ({"label": "rtvi-ai", "type": "send-text", "id": "1", "data": {}}, "bad-rtvi"),
        (
            {
                "label": "rtvi-ai",
                "type": "send-text",
                "id": "1",
                "data": {"content": "x" * (MAX_SEND_TEXT_CHARS + 1)},
            },
            "bad-rtvi",
        ),
    ],
)
def test_other_rtvi_messages_are_refused(message, kind):
    with pytest.raises(InputRejected) as err:
        check_rtvi_message(json.dumps(message))
    assert err.value.kind == kind


def test_deeply_nested_json_is_a_clean_rejection():
    with pytest.raises(InputRejected) as err:
        check_rtvi_message("[" * 100_000 + "]" * 100_000)
    assert err.value.kind == "bad-json"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("voice.example.com", False),
    ],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback_host(host) is loopback


def test_client_strings_cannot_forge_log_lines():
    with pytest.raises(InputRejected) as err:
        check_rtvi_message(json.dumps({"label": "rtvi-ai", "type": "x\nFAKE LOG LINE\x1b[31m"}))
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
    refusal = policy().check({"origin": "http://a\r\nInjected: 1"}, {})
    assert refusal is not None and "\n" not in refusal.reason
