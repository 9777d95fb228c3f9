"""Helpers shared by the cloud-provider tests: the server's flags for the fakes, and a turn."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ai_operator.client import VoiceClient
from fakes.cartesia import FakeCartesia
from fakes.deepgram import FakeDeepgram
from fakes.openai import FakeOpenAI

TURN_TIMEOUT = 60.0
# Silence the client keeps sending after a question, like an open microphone.
TRAILING_SILENCE_SECS = 30.0


@dataclass
class Fakes:
    deepgram: FakeDeepgram
    openai: FakeOpenAI
    cartesia: FakeCartesia

    def reset(self) -> None:
        for fake in (self.deepgram, self.openai, self.cartesia):
            fake.reset()
        self.deepgram.api_key = "test-deepgram-key"
        self.openai.api_key = "test-openai-key"
        self.cartesia.api_key = "test-cartesia-key"

    def env(self) -> dict[str, str]:
        """The keys, as a user puts them in the environment."""
        return {
            "DEEPGRAM_API_KEY": "test-deepgram-key",
            "OPENAI_API_KEY": "test-openai-key",
            "CARTESIA_API_KEY": "test-cartesia-key",
        }

    def url_args(self) -> list[str]:
        """The base-URL settings that point each provider at its fake."""
        return [
            "--deepgram-base-url",
            self.deepgram.base_url,
            "--openai-base-url",
            self.openai.base_url,
            "--cartesia-base-url",
            self.cartesia.base_url,
        ]


def start_fakes() -> Fakes:
    return Fakes(FakeDeepgram().start(), FakeOpenAI().start(), FakeCartesia().start())


def stop_fakes(fakes: Fakes) -> None:
    for fake in (fakes.deepgram, fakes.openai, fakes.cartesia):
        fake.stop()


async def greeted(client: VoiceClient) -> None:
    """Say client-ready and wait until the greeting has been spoken."""
    await client.ready()
    await client.wait_for(lambda r: bool(r.of("bot-stopped-speaking")), timeout=TURN_TIMEOUT)


async def turn(client: VoiceClient, pcm: bytes, *, wait_secs: float = TURN_TIMEOUT) -> float:
    """Speak `pcm`, keep the microphone open, wait until the bot has answered audibly.

    Returns the time speech ended (time.monotonic()).
    """
    answered_before = len(client.recording.of("bot-stopped-speaking"))
    await client.silence(0.4)
    end = await client.stream(pcm)
    trailing = asyncio.create_task(client.silence(TRAILING_SILENCE_SECS))
    try:
        await client.wait_for(
            lambda r: (
                r.first_audible_after(end) is not None
                and len(r.of("bot-stopped-speaking")) > answered_before
            ),
            timeout=wait_secs,
        )
    finally:
        trailing.cancel()
    return end


def notices(client: VoiceClient, kind: str = "provider-failover") -> list[dict[str, Any]]:
    return [
        e.data
        for e in client.recording.of("server-message")
        if isinstance(e.data, dict) and e.data.get("type") == kind
    ]


def said_by_user(client: VoiceClient) -> str:
    return " ".join(
        str(e.data.get("text", ""))
        for e in client.recording.of("user-transcription")
        if isinstance(e.data, dict) and e.data.get("final")
    ).lower()


def said_by_bot(client: VoiceClient, after: float = 0.0, before: float = float("inf")) -> str:
    """The bot's words the client was shown between two moments (time.monotonic())."""
    return " ".join(
        str(e.data.get("text", ""))
        for e in client.recording.of("bot-output")
        if isinstance(e.data, dict) and after <= e.t < before
    )


def answer_delay(client: VoiceClient, end: float) -> float:
    """Seconds from the end of the user's speech to the bot's first audible audio."""
    heard = client.recording.first_audible_after(end)
    assert heard is not None, "the bot never answered audibly"
    return heard - end
