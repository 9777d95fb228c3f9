"""Conversation recording: the always-valid WAV writer, the recording processor, the history
column (including files written before it existed) and the route that serves the file."""

from __future__ import annotations

import sqlite3
import wave
from pathlib import Path

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.tests.utils import run_test

from ai_operator.api import build_router
from ai_operator.audio import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, rms_int16
from ai_operator.config import load_settings
from ai_operator.history import HistoryStore
from ai_operator.metrics import Metrics
from ai_operator.recording import (
    RECORDING_CHANNELS,
    RECORDING_SAMPLE_RATE,
    AudioRecording,
    WavAppender,
    recording_path,
)
from ai_operator.security import AccessPolicy


def tone(secs: float, rate: int, hz: float = 220.0, amplitude: int = 6000) -> bytes:
    t = np.arange(int(secs * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        samples = np.frombuffer(w.readframes(params.nframes), dtype="<i2")
    return params, samples.reshape(-1, params.nchannels)


def test_the_file_is_a_complete_wav_after_every_append_without_close(tmp_path):
    """What a crash leaves behind: everything appended so far, readable, nothing closed."""
    path = tmp_path / "c.wav"
    wav = WavAppender(path, sample_rate=24_000, channels=2)
    params, frames = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate, len(frames)) == (2, 2, 24_000, 0)

    first = np.array([[1, -1], [2, -2], [3, -3]], dtype="<i2")
    wav.append(first.tobytes())
    params, frames = read_wav(path)
    assert params.nframes == 3 and np.array_equal(frames, first)

    second = np.array([[4, -4]], dtype="<i2")
    wav.append(second.tobytes())
    _, frames = read_wav(path)
    assert np.array_equal(frames, np.vstack([first, second]))

    wav.close()
    wav.close()  # idempotent
    _, frames = read_wav(path)
    assert len(frames) == 4


async def test_the_recording_puts_the_caller_left_and_the_bot_right(tmp_path):
    created: list[Path] = []
    path = recording_path(tmp_path / "rec", "abc123")
    recording = AudioRecording(path, on_created=created.append)
    caller = tone(1.5, INPUT_SAMPLE_RATE, hz=300)
    bot = tone(1.5, OUTPUT_SAMPLE_RATE, hz=500)
    frames = [
        InputAudioRawFrame(caller[i : i + 640], INPUT_SAMPLE_RATE, 1)
        for i in range(0, len(caller), 640)
    ] + [
        OutputAudioRawFrame(bot[i : i + 1920], OUTPUT_SAMPLE_RATE, 1)
        for i in range(0, len(bot), 1920)
    ]
    await run_test(recording.processor, frames_to_send=frames)  # ends with an EndFrame
    await recording.close()

    assert created == [path] and path.name == "abc123.wav"
    params, samples = read_wav(path)
    assert params.nchannels == RECORDING_CHANNELS and params.sampwidth == 2
    assert params.framerate == RECORDING_SAMPLE_RATE
    # The caller spoke for 1.5 s, then the bot did: each side is audible only in its own
    # part. Upsampling the caller holds back up to ~0.15 s (SoX's very-high-quality filter),
    # which the end of the stream never releases; hence the margins.
    assert 2.8 < params.nframes / RECORDING_SAMPLE_RATE <= 3.0
    left, right = samples[:, 0], samples[:, 1]
    caller_part = slice(0, int(1.2 * RECORDING_SAMPLE_RATE))
    bot_part = slice(int(1.6 * RECORDING_SAMPLE_RATE), None)
    assert rms_int16(left[caller_part].tobytes()) > 3000
    assert rms_int16(right[bot_part].tobytes()) > 3000
    assert rms_int16(right[caller_part].tobytes()) == 0
    assert rms_int16(left[bot_part].tobytes()) == 0


async def test_a_recording_without_audio_writes_no_file(tmp_path):
    recording = AudioRecording(tmp_path / "rec" / "x.wav")
    await run_test(recording.processor, frames_to_send=[])
    await recording.close()
    assert not (tmp_path / "rec").exists()


def test_an_older_history_file_gains_the_recording_column(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the schema before recordings existed
        db.execute(
            "CREATE TABLE conversations (id TEXT PRIMARY KEY, started_at REAL NOT NULL, "
            "ended_at REAL, transport TEXT NOT NULL DEFAULT 'websocket', "
            "providers TEXT NOT NULL DEFAULT '{}')"
        )
        db.execute("INSERT INTO conversations (id, started_at) VALUES ('old', 1.0)")
    store = HistoryStore(path)
    HistoryStore(path).close()  # opening it again finds the column already there
    assert store.recording("old") is None
    store.set_recording("old", tmp_path / "old.wav")
    store.end_conversation("old")
    assert store.flush()
    stored = store.recording("old")
    assert stored is not None and stored.path == tmp_path / "old.wav" and stored.finished
    assert store.conversation("old")["recording"] == str(tmp_path / "old.wav")  # type: ignore[index]
    store.close()


def test_the_route_serves_the_stored_file_and_nothing_else(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    wav = tmp_path / "rec" / "c1.wav"
    wav.parent.mkdir()
    WavAppender(wav, sample_rate=RECORDING_SAMPLE_RATE, channels=2).append(b"\1\0\2\0" * 100)
    (tmp_path / "secret.txt").write_text("not for you")
    for cid in ("c1", "c2", "live"):
        store.start_conversation(cid, transport="websocket", providers={})
    store.set_recording("c1", wav)
    store.set_recording("live", wav)  # not ended: the file may still grow
    store.end_conversation("c1")
    assert store.flush()
    app = FastAPI()
    app.include_router(
        build_router(
            web_dir=tmp_path,
            history=store,
            metrics=Metrics(),
            access=AccessPolicy(load_settings({"port": 8000}, env_file=None)),
        )
    )
    http = TestClient(app)

    assert http.get("/api/conversations/c1").json()["recording"] == (
        "/api/conversations/c1/recording"
    )
    served = http.get("/api/conversations/c1/recording")
    assert served.status_code == 200 and served.headers["content-type"] == "audio/wav"
    assert served.content == wav.read_bytes()
    snapshot = http.get("/api/conversations/live/recording")
    assert snapshot.headers["content-type"] == "audio/wav"
    assert snapshot.content == wav.read_bytes()
    assert http.get("/api/conversations/c2").json()["recording"] is None
    assert http.get("/api/conversations/c2/recording").status_code == 404
    assert http.get("/api/conversations/nope/recording").status_code == 404
    traversal = http.get("/api/conversations/..%2F..%2Fsecret.txt/recording")
    assert traversal.status_code == 404 and b"not for you" not in traversal.content
    store.close()
