"""Who may open /ws, how fast they may send, and keeping secrets out of what we emit.

Pure policy, no I/O: the server asks `AccessPolicy.check()` before accepting a WebSocket,
each session meters its input with an `InputRateLimiter`, and every message bound for a
client passes through `SecretRedactor`. See docs/protocol.md for the close codes.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from ai_operator.config import Settings

# WebSocket close codes (RFC 6455 section 7.4.1) the server uses.
CLOSE_NORMAL = 1000
CLOSE_POLICY_VIOLATION = 1008
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
# A close reason must fit in a 125-byte control frame, two of which hold the code.
MAX_CLOSE_REASON_BYTES = 123

# Bursts: a client may send this many seconds' worth of its rate limit at once.
RATE_LIMIT_BURST_SECS = 2.0

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
REDACTED = "[REDACTED]"
# Shorter secrets are not redacted: replacing every "abc" in a transcript helps nobody.
MIN_SECRET_CHARS = 6


def close_reason(text: str) -> str:
    """`text` cut to what fits in a WebSocket close frame, on a character boundary."""
    data = text.encode()
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return text
    return data[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


# ----------------------------------------------------------------------------------------
# Access: origin allowlist, bearer token
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """Why a WebSocket may not have a session. `check` says which rule refused it."""

    check: Literal["origin", "token"]
    reason: str


def _host_port(netloc: str) -> tuple[str, int | None]:
    """'Example.COM:8000' -> ('example.com', 8000); ports that do not parse -> None."""
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` keeps the server reachable from this machine only."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class AccessPolicy:
    """Decides whether a WebSocket handshake may proceed.

    Origin: browsers always send it, so a cross-site page cannot drive a user's local
    server (cross-site WebSocket hijacking). Allowed by default: this server's port on
    localhost / 127.0.0.1 / [::1], on its configured host, and on whatever IP address the
    page was loaded from (an IP, never a DNS name, so DNS rebinding cannot pass). Clients
    that send no Origin at all are not browsers; the token is what guards against them.

    Token: when configured, required as `Authorization: Bearer <token>` or `?token=<token>`
    (browsers cannot set WebSocket headers), compared in constant time.
    """

    def __init__(self, settings: Settings) -> None:
        self._token = (settings.token or "").encode()
        self._port = settings.port
        listed = [o.strip() for o in settings.allowed_origins.split(",") if o.strip()]
        self._any_origin = "*" in listed
        self._listed = {o.rstrip("/").lower() for o in listed if o != "*"}
        self._hosts = set(LOOPBACK_NAMES)
        if settings.host not in WILDCARD_HOSTS:
            self._hosts.add(settings.host.strip("[]").lower())

    def check(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Refusal | None:
        """None when the handshake may proceed, else the refusal to send."""
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, headers.get("host", "")):
            return Refusal("origin", f"origin {origin[:80]!r} is not allowed")
        if self._token and not self.token_ok(headers, query):
            return Refusal("token", "unauthorized: missing or wrong token")
        return None

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if self._any_origin or origin in self._listed:
            return True
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False
        default_port = 443 if parts.scheme == "https" else 80
        host, port = _host_port(parts.netloc)
        port = port or default_port
        if port == self._port and host in self._hosts:
            return True
        # Same origin as the page itself, when the page was loaded by IP address.
        page_host, page_port = _host_port(host_header)
        return (page_host, page_port or default_port) == (host, port) and _is_ip_literal(host)

    def token_ok(self, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        if not self._token:
            return True
        offered = ""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered = value.strip()
        elif "token" in query:
            offered = query["token"]
        return hmac.compare_digest(offered.encode(), self._token)


# ----------------------------------------------------------------------------------------
# Rate limiting
# ----------------------------------------------------------------------------------------


class TokenBucket:
    """`rate` units per second, at most `burst` saved up; `take(n)` spends or refuses."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._level = burst
        self._stamp = clock()

    def take(self, amount: float = 1.0) -> bool:
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._level < amount:
            return False
        self._level -= amount
        return True


class InputRateLimiter:
    """Meters one client's messages: messages per second and bytes per second."""

    def __init__(
        self,
        messages_per_sec: int,
        bytes_per_sec: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._messages = TokenBucket(
            messages_per_sec, messages_per_sec * RATE_LIMIT_BURST_SECS, clock
        )
        self._bytes = TokenBucket(bytes_per_sec, bytes_per_sec * RATE_LIMIT_BURST_SECS, clock)

    def admit(self, num_bytes: int) -> str | None:
        """None if the message is within the limits, else what was exceeded."""
        if not self._messages.take(1):
            return f"more than {self._messages.rate:.0f} messages per second"
        if not self._bytes.take(num_bytes):
            return f"more than {self._bytes.rate:.0f} bytes per second"
        return None


# ----------------------------------------------------------------------------------------
# Secrets
# ----------------------------------------------------------------------------------------


class SecretRedactor:
    """Replaces the configured secrets (API keys, the /ws token) wherever they appear."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretRedactor:
        values: list[str] = [settings.token or ""]
        for name in Settings.model_fields:
            value = getattr(settings, name)
            if hasattr(value, "get_secret_value"):
                values.append(value.get_secret_value())
        return cls(values)

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like value with every string redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        return value

    def log_filter(self) -> logging.Filter:
        """A handler filter that redacts each record's formatted message."""
        redactor = self

        class _Redact(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                message = record.getMessage()
                clean = redactor.text(message)
                if clean != message:
                    record.msg, record.args = clean, None
                return True

        return _Redact()

    def loguru_patcher(self) -> Callable[[Any], None]:
        """For `loguru.logger.configure(patcher=...)`: Pipecat logs through loguru."""

        def patch(record: Any) -> None:
            record["message"] = self.text(record["message"])

        return patch
