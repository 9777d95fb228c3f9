"""`--record-audio` end to end: a real spoken turn, then the client vanishes without a close
handshake. The WAV file holds the caller on the left and the bot on the right, on the
session's clock; the history API links it and serves exactly that file. With recording
off (the default) no file is written."""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soxr
from tests.integration.conftest import running_server, wait_until

from ai_operator.audio import AUDIBLE_RMS, INPUT_SAMPLE_RATE, rms_int16
from ai_operator.client import VoiceClient
from ai_operator.config import load_settings
from ai_operator.history import HistoryStore
from ai_operator.recording import FLUSH_SECS, RECORDING_SAMPLE_RATE, recording_path

TURN_TIMEOUT = 60.0
RATE = RECORDING_SAMPLE_RATE
# How far the recording's clock may sit from the client's: the session starts a moment
# after the socket opens, and upsampling the caller delays the left channel by ~0.1 s.
SLACK_SECS = 0.5


def read_stereo(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        samples = np.frombuffer(w.readframes(params.nframes), dtype="<i2")
    return params, samples.reshape(-1, params.nchannels)


def span(channel: np.ndarray, start: float, end: float) -> np.ndarray:
    """The part of a channel between two session times (s), clipped to the recording."""
    return channel[max(0, int(start * RATE)) : max(0, int(end * RATE))]


def best_match(haystack: np.ndarray, needle: np.ndarray) -> tuple[float, float]:
    """(offset s, normalised correlation) of `needle`'s best alignment inside `haystack`."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(h) + len(n))))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)
    corr = corr[: len(h) - len(n) + 1]
    energy = np.sqrt(np.convolve(h * h, np.ones(len(n)), mode="valid"))
    score = corr / (energy * np.linalg.norm(n) + 1e-9)
    best = int(np.argmax(score))
    return best / RATE, float(score[best])


async def converse_then_vanish(ws_url: str, question_pcm: bytes) -> dict[str, float]:
    """Greeting, one spoken question, the bot's answer; then a TCP abort. Client times (s)."""
    opened = time.monotonic()
    client = VoiceClient(ws_url)
    await client.__aenter__()
    try:
        await client.ready()
        greeted = await client.wait_for(
            lambda r: bool(r.of("bot-stopped-speaking")), timeout=TURN_TIMEOUT
        )
        greeting_end = greeted.of("bot-stopped-speaking")[0].t
        await client.silence(0.4)
        asked = time.monotonic()
        question_end = await client.stream(question_pcm)
        trailing = asyncio.create_task(client.silence(30))
        try:
            answered = await client.wait_for(
                lambda r: len(r.of("bot-stopped-speaking")) >= 2, timeout=TURN_TIMEOUT
            )
        finally:
            trailing.cancel()
        answer_start = answered.of("bot-started-speaking")[1].t
        answer_end = answered.of("bot-stopped-speaking")[1].t
        client._ws.transport.abort()  # noqa: SLF001 - vanish: no close handshake at all
        gone = time.monotonic()
    finally:
        await client.close()
    return {
        "greeting_end": greeting_end - opened,
        "asked": asked - opened,
        "question_end": question_end - opened,
        "answer_start": answer_start - opened,
        "answer_end": answer_end - opened,
        "gone": gone - opened,
    }


async def ended_conversation(http: httpx.AsyncClient, started_after: float) -> dict[str, Any]:
    """The conversation begun after `started_after` (epoch s), once the server has ended it."""
    found: dict[str, Any] = {}

    async def ended() -> bool:
        listing = (await http.get("/api/conversations")).json()
        ours = [c for c in listing if c["started_at"] >= started_after]
        if not ours:
            return False
        found.update((await http.get(f"/api/conversations/{ours[0]['id']}")).json())
        return found["ended_at"] is not None

    deadline = time.monotonic() + 30
    while not await ended():
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not end the conversation within 30 s")
        await asyncio.sleep(0.2)
    return found


async def test_both_sides_are_recorded_even_when_the_client_vanishes(tmp_path, question_pcm):
    recordings = tmp_path / "recordings"
    args = ["--record-audio", "--recordings-dir", str(recordings)]
    with running_server(args, name="recording") as server:
        started = time.time()
        times = await converse_then_vanish(server.ws_url, question_pcm)
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            convo = await ended_conversation(http, started)
            # The session closes the file before it marks the conversation ended.
            path = recording_path(recordings, convo["id"])
            await wait_until(path.is_file, timeout=5)
            assert convo["recording"] == f"/api/conversations/{convo['id']}/recording"
            served = await http.get(convo["recording"])
        log = server.log()

    assert "recording: both sides of every conversation to" in log and str(recordings) in log
    assert served.status_code == 200
    assert served.headers["content-type"] == "audio/wav"
    assert served.content == path.read_bytes()

    params, samples = read_stereo(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, RATE)
    duration = params.nframes / RATE
    assert abs(duration - times["gone"]) < 1.0, (duration, times)
    left, right = samples[:, 0], samples[:, 1]

    # Left: the caller. Silent through the greeting; the question itself, sample for sample
    # (upsampled), where the client spoke it.
    assert rms_int16(span(left, 0, times["asked"] - SLACK_SECS).tobytes()) < AUDIBLE_RMS / 10
    question = soxr.resample(
        np.frombuffer(question_pcm, dtype="<i2").astype(np.float32), INPUT_SAMPLE_RATE, RATE
    )
    window_start = times["asked"] - SLACK_SECS
    window = span(left, window_start, times["question_end"] + SLACK_SECS)
    offset, score = best_match(window, question)
    assert score > 0.9, score
    assert abs(window_start + offset - times["asked"]) < SLACK_SECS, (offset, times)

    # Right: the bot. Its greeting and its answer are audible; it is quiet while the
    # caller asks (there is no echo in this test: the client plays nothing back).
    greeting = span(right, SLACK_SECS, times["greeting_end"] - SLACK_SECS)
    answer = span(right, times["answer_start"] + SLACK_SECS, times["answer_end"] - SLACK_SECS)
    assert rms_int16(greeting.tobytes()) > 5 * AUDIBLE_RMS
    assert rms_int16(answer.tobytes()) > 5 * AUDIBLE_RMS
    asking = span(right, times["asked"] + SLACK_SECS, times["question_end"] - SLACK_SECS)
    assert rms_int16(asking.tobytes()) < AUDIBLE_RMS / 10


async def test_a_server_killed_mid_conversation_leaves_a_playable_recording(tmp_path):
    """SIGKILL, no cleanup at all: the file already holds all but the last second or so."""
    recordings = tmp_path / "recordings"
    args = ["--record-audio", "--recordings-dir", str(recordings)]
    with running_server(args, name="recording-killed") as server:
        opened = time.monotonic()
        async with VoiceClient(server.ws_url) as client:
            await client.ready()
            await client.wait_for(
                lambda r: bool(r.of("bot-stopped-speaking")), timeout=TURN_TIMEOUT
            )
            greeting_end = time.monotonic() - opened
            server.proc.kill()
            server.proc.wait()
    store = HistoryStore(server.history_path)
    try:
        (convo,) = store.conversations()
        stored = store.recording(convo["id"])
    finally:
        store.close()
    assert stored is not None and not stored.finished
    assert stored.path == recording_path(recordings, convo["id"])
    params, samples = read_stereo(stored.path)  # a valid WAV, header and all
    assert params.nframes / RATE > greeting_end - 2 * FLUSH_SECS, (params, greeting_end)
    assert rms_int16(samples[:, 1].tobytes()) > 5 * AUDIBLE_RMS  # the greeting is in it


async def test_nothing_is_recorded_by_default(live_server):
    """The shared default server: no link in history, no route, no file where one would go."""
    default_dir = load_settings({}, env_file=None).recordings_dir
    existed = default_dir.exists()
    started = time.time()
    async with VoiceClient(live_server.ws_url) as client:
        await client.ready()
        await client.wait_for(lambda r: bool(r.of("bot-stopped-speaking")), timeout=TURN_TIMEOUT)
        await client.silence(0.4)
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        convo = await ended_conversation(http, started)
        assert convo["recording"] is None
        assert (await http.get(f"/api/conversations/{convo['id']}/recording")).status_code == 404
    assert not recording_path(default_dir, convo["id"]).exists()
    assert default_dir.exists() == existed
