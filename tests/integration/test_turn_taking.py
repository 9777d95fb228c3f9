"""Turn taking against the real server and models, on scripted timelines.

A scripted caller (`ai_operator.listener`) plays the bot's audio like the web page does and
talks at known moments: over the bot (a real interruption, a backchannel), with the bot's
own voice leaking back into its microphone, or with a pause mid-sentence. The assertions
are on *when* things happen, with bounds generous enough for a loaded 2-core machine;
`bench/turn_taking.py` measures the same scenarios precisely.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from tests.conftest import ServerProcess, running_server

from ai_operator.client import VoiceClient
from ai_operator.listener import Echo, ScriptedCall, hesitation
from ai_operator.speech import synthesize_pcm16k

GREETING = (
    "Welcome to the AI Operator. I can answer questions about many topics, tell you about "
    "the weather, help you plan a trip, and keep you company while you cook dinner. Today I "
    "would like to tell you a little about how I work, so that our conversation feels "
    "natural and easy for you."
)
TIMEOUT = 60.0
# Generous: measured ~0.3 s on an idle machine (see docs/benchmarks.md).
STOP_BOUND_SECS = 1.2


@pytest.fixture(scope="module")
def talker() -> Iterator[ServerProcess]:
    """A server whose greeting is long enough to talk over."""
    with running_server(["--greeting", GREETING], name="turn-taking") as server:
        yield server


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    texts = ["Sorry to interrupt but I have a question.", "Yeah."]
    return {t: synthesize_pcm16k(t) for t in texts}


async def talk_over_the_bot(
    url: str, pcm: bytes | None, *, echo: Echo | None = None, tail: float = 4.0
) -> tuple[ScriptedCall, VoiceClient, float, float]:
    """Let the greeting play 1.5 s, say `pcm` over it, listen `tail` s more."""
    async with VoiceClient(url) as client:
        call = ScriptedCall(client, echo=echo)
        call.start()
        try:
            await client.ready()
            await asyncio.wait_for(call.wait_heard(1.5), TIMEOUT)
            onset = end = call.now()
            if pcm is not None:
                onset, end = await asyncio.wait_for(call.say(pcm), TIMEOUT)
            await asyncio.sleep(tail)
            call.sync()
        finally:
            await call.stop()
    return call, client, onset, end


async def test_talking_over_the_bot_stops_it_fast(talker, clips):
    call, client, onset, _ = await talk_over_the_bot(
        talker.ws_url, clips["Sorry to interrupt but I have a question."]
    )
    cuts = [e.t for e in client.recording.of("interruption") if e.t > onset]
    assert cuts, "the bot was never interrupted"
    # The bot's audio that started before the interruption stopped soon after the onset...
    before = [end for start, end in call.speaker.audible_runs() if start < cuts[0]]
    assert max(before) - onset < STOP_BOUND_SECS
    # ...and the client was told to flush whatever it still held.
    assert call.speaker.flushes
    assert client.recording.of("user-started-speaking")


async def test_backchannel_does_not_interrupt_and_the_bot_goes_on(talker, clips):
    call, client, onset, end = await talk_over_the_bot(talker.ws_url, clips["Yeah."])
    assert not [e for e in client.recording.of("interruption") if e.t > onset - 0.1]
    assert not client.recording.of("user-started-speaking")
    # The bot is audible again within a second of the "yeah" ending...
    resumed = [start for start, _ in call.speaker.audible_runs() if start > end]
    assert resumed and resumed[0] - end < 1.0
    # ...and its words were reported as a backchannel, not as a turn.
    kinds = [e.data.get("input_type") for e in client.recording.of("user-input")]
    assert "backchannel" in kinds


async def test_own_voice_leaking_back_does_not_interrupt(talker):
    call, client, onset, _ = await talk_over_the_bot(
        talker.ws_url, None, echo=Echo(gain_db=-20.0, delay_secs=0.1), tail=5.0
    )
    assert not client.recording.of("interruption")
    assert not client.recording.of("user-started-speaking")
    assert call.speaker.audible_secs() > 5.0  # it kept talking


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("My name is", "John Smith and I live in Boston."),
        ("Can you tell me the way to", "the station?"),
        # A whole clause before the pause: only the statement wait keeps the turn open.
        ("I'd like to book a table", "for two people tomorrow."),
    ],
)
async def test_no_answer_during_a_mid_sentence_pause(live_server, before, after):
    """'My name is ... John Smith' gets one answer, after the whole sentence."""
    first, second = hesitation(before, after, 0.8)
    async with VoiceClient(live_server.ws_url) as client:
        call = ScriptedCall(client)
        call.start()
        try:
            await client.ready()
            await client.wait_for(lambda r: bool(r.of("bot-stopped-speaking")), timeout=TIMEOUT)
            spans = [call.say(first), call.say(second)]
            (_, first_end), (resumed, end) = [await asyncio.wait_for(s, TIMEOUT) for s in spans]
            await client.wait_for(
                lambda r: any(e.t > end for e in r.of("user-stopped-speaking")), timeout=TIMEOUT
            )
            await asyncio.sleep(3.0)
            call.sync()
        finally:
            await call.stop()
    commits = [e.t for e in client.recording.of("user-stopped-speaking") if e.t > first_end]
    assert not [t for t in commits if t < resumed], "the pipeline committed during the pause"
    answer = [s for s, _ in call.speaker.audible_runs() if s > first_end]
    assert answer and answer[0] > end, "the bot spoke before the user had finished"
    said = " ".join(client.recording.texts("user-transcription")).lower()
    assert before.split()[-1].lower() in said and after.split()[-1].strip("?.").lower() in said
