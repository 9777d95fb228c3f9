"""Launch a server, drive it like a caller with a microphone, measure what comes back.

The caller is `ai_operator.client.VoiceClient` plus a `Microphone` that sends a 20 ms
frame every 20 ms for the whole session (silence unless it is saying a clip), because a
turn detector that hears the audio simply stop behaves differently from one that keeps
hearing room silence.

Hooks for later suites: `converse()` is one complete scripted session and
`run_sessions()` runs several of them at once against one server (capacity, soak).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import websockets

from ai_operator.audio import FRAME_MS, INPUT_FRAME_BYTES, rms_int16
from ai_operator.client import Recording, VoiceClient, audio_message
from bench.questions import Clip
from bench.timeline import BargeIn, TurnTiming, analyse_barge_in, analyse_turn, first_audible

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"

FRAME_SECS = FRAME_MS / 1000
SERVER_READY_TIMEOUT_SECS = 180.0
# Longest wait for the bot to answer and finish speaking (a cold reference session loads
# its models first).
TURN_TIMEOUT_SECS = 90.0
# A pause between the bot finishing and the caller's next question, as a person leaves.
BETWEEN_TURNS_SECS = 0.8
# Barge-in: how long the bot talks before the caller talks over it.
BARGE_IN_AFTER_SECS = 1.0


# ----------------------------------------------------------------------------------------
# Launching servers
# ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server in a subprocess, logging to bench/results/<name>-<port>.log.

    `start_to_healthy` is the wall time from spawning the process to the first 200 from
    `health_path`: what a user waits for after typing the command.
    """

    def __init__(self, name: str, argv: list[str], port: int, health_path: str = "/healthz"):
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.health_url = self.base_url + health_path
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS_DIR / f"{name}-{port}.log"
        self._log = self.log_path.open("w")
        self.started = time.monotonic()
        self.start_to_healthy: float | None = None
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
        )

    def wait_healthy(self, timeout: float = SERVER_READY_TIMEOUT_SECS) -> float:
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.health_url, timeout=1).status_code == 200:
                    self.start_to_healthy = time.monotonic() - self.started
                    return self.start_to_healthy
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not healthy after {timeout:.0f} s; see {self.log_path}")

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            wait_or_kill(self.proc, timeout=15)
        self._log.close()


def wait_or_kill(proc: subprocess.Popen[Any], *, timeout: float) -> None:
    """Wait for a process told to end; kill it if it has not within `timeout` seconds."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def ours(extra_args: Sequence[str] = ()) -> ServerProcess:
    """`ai-operator serve` on a free port, ignoring any .env in the checkout."""
    port = free_port()
    argv = [sys.executable, "-m", "ai_operator", "serve", "--port", str(port)]
    return ServerProcess("ours", [*argv, "--env-file", "/dev/null", *extra_args], port)


_READY_LINE = re.compile(r"ready in ([0-9.]+) s")


def reported_ready_secs(log: str) -> float | None:
    """The server's own "ready in X s" figure (from its process start: imports, models)."""
    match = _READY_LINE.search(log)
    return float(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------
# The caller's microphone
# ----------------------------------------------------------------------------------------


@dataclass
class Spoken:
    """When a clip's speech went out: send times of its first and last speech frames."""

    speech_start: float
    speech_end: float
    clip_end: float


def quiet_frames(noise_dbfs: float | None) -> list[bytes]:
    """20 ms frames of what a microphone sends between lines: one of digital silence, or a
    second of white noise whose peaks reach `noise_dbfs`."""
    if noise_dbfs is None:
        return [b"\0" * INPUT_FRAME_BYTES]
    rng = np.random.default_rng(1)
    peak = 32767 * 10 ** (noise_dbfs / 20)
    noise = (rng.uniform(-1, 1, 50 * INPUT_FRAME_BYTES // 2) * peak).astype("<i2").tobytes()
    return [noise[i : i + INPUT_FRAME_BYTES] for i in range(0, len(noise), INPUT_FRAME_BYTES)]


class Microphone:
    """Sends one 20 ms frame every 20 ms: silence, or the clip being said.

    A frame's send time is when the server could first have heard it, so `say()` reports
    the send times of the frames holding the first and last speech samples. If the loop
    falls behind (a busy machine), it catches up by sending back to back, as a browser's
    buffered microphone does.
    """

    def __init__(self, client: VoiceClient, *, noise_dbfs: float | None = None) -> None:
        self._client = client
        # Between lines: digital silence, or a second of room noise peaking at `noise_dbfs`
        # over and over (a microphone without noise suppression).
        self._quiet = [audio_message(pcm) for pcm in quiet_frames(noise_dbfs)]
        self._quiet_at = 0
        self._frames: collections.deque[bytes] = collections.deque()
        self._sent: list[float] = []
        self._done: asyncio.Future[list[float]] | None = None
        self._task: asyncio.Task[None] | None = None
        # (send time, "speech-start" | "speech-end", clip text) of everything said
        self.marks: list[tuple[float, str, str]] = []

    async def __aenter__(self) -> Microphone:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def say(self, clip: Clip) -> Spoken:
        """Queue `clip` after the current frame; return once its last frame has been sent."""
        if self._done is not None:
            raise RuntimeError("the microphone is already saying something")
        pcm = clip.pcm + b"\0" * (-len(clip.pcm) % INPUT_FRAME_BYTES)
        self._frames.extend(
            audio_message(pcm[i : i + INPUT_FRAME_BYTES])
            for i in range(0, len(pcm), INPUT_FRAME_BYTES)
        )
        self._sent = []
        self._done = asyncio.get_running_loop().create_future()
        try:
            sent = await self._done
        finally:
            self._done = None
        spoken = Spoken(sent[clip.first_speech_frame], sent[clip.last_speech_frame], sent[-1])
        self.marks += [(spoken.speech_start, "mic-speech-start", clip.text)]
        self.marks += [(spoken.speech_end, "mic-speech-end", clip.text)]
        return spoken

    def _next_quiet(self) -> bytes:
        self._quiet_at = (self._quiet_at + 1) % len(self._quiet)
        return self._quiet[self._quiet_at]

    async def _run(self) -> None:
        start = time.monotonic()
        n = 0
        try:
            while True:
                speaking = bool(self._frames)
                await self._client.send(self._frames.popleft() if speaking else self._next_quiet())
                if speaking:
                    self._sent.append(time.monotonic())
                    if not self._frames and self._done is not None:
                        self._done.set_result(self._sent)
                n += 1
                delay = start + n * FRAME_SECS - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        except websockets.ConnectionClosed as exc:
            if self._done is not None and not self._done.done():
                self._done.set_exception(exc)


# ----------------------------------------------------------------------------------------
# Driving a session
# ----------------------------------------------------------------------------------------


@dataclass
class SessionResult:
    """One scripted conversation. Times in seconds."""

    connect_to_bot_ready: float | None = None
    connect_to_greeting_audio: float | None = None
    turns: list[TurnTiming] = field(default_factory=list)
    barge_ins: list[BargeIn] = field(default_factory=list)
    error: str | None = None
    # Everything received, for digging into a number: [secs since connect, kind, data]
    # (audio as its RMS level). Kept only when asked for.
    timeline: list[list[Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Answered:
    """Predicate: audible bot audio arrived after `after` and the bot has since stopped.

    Scans incrementally: it runs on every message received during a long answer.
    """

    def __init__(self, after: float) -> None:
        self._after = after
        self._pos = 0
        self._heard = False

    def __call__(self, recording: Recording) -> bool:
        events = recording.events
        while self._pos < len(events):
            e = events[self._pos]
            self._pos += 1
            if not self._heard:
                self._heard = first_audible([e], self._after) is not None
            elif e.kind == "bot-stopped-speaking":
                return True
        return False


async def _wait(client: VoiceClient, predicate: Callable[[Recording], bool]) -> None:
    """Wait for `predicate`; ConnectionError at once if the server hangs up meanwhile."""
    await client.wait_for(
        lambda r: predicate(r) or client.closed.is_set(), timeout=TURN_TIMEOUT_SECS
    )
    if client.closed.is_set():
        raise ConnectionError(f"server closed the connection ({client.close_code})")


async def _greet(client: VoiceClient, connected: float, result: SessionResult) -> None:
    await client.ready()
    result.connect_to_bot_ready = time.monotonic() - connected
    await _wait(client, _Answered(connected))
    audio_at = first_audible(client.recording.events, connected)
    result.connect_to_greeting_audio = audio_at - connected if audio_at else None


async def ask(client: VoiceClient, mic: Microphone, clip: Clip) -> TurnTiming:
    """Say `clip`, wait until the bot has answered and finished, measure the turn."""
    await asyncio.sleep(BETWEEN_TURNS_SECS)  # pacing, as a caller pauses; not a sync point
    first_event = len(client.recording.events)
    spoken = await mic.say(clip)
    try:
        await _wait(client, _Answered(spoken.speech_end))
    except TimeoutError:
        pass  # measured below as "no bot audio"; the session goes on
    events = client.recording.events[first_event:]
    return analyse_turn(events, clip.text, spoken.speech_start, spoken.speech_end)


async def barge_in(
    client: VoiceClient, mic: Microphone, long_prompt: Clip, interruption: Clip
) -> BargeIn:
    """Ask for a long answer, talk over it after a while, measure how fast the bot stops."""
    await asyncio.sleep(BETWEEN_TURNS_SECS)
    first_event = len(client.recording.events)
    spoken = await mic.say(long_prompt)
    try:
        await _wait(
            client, lambda r: first_audible(r.events[first_event:], spoken.speech_end) is not None
        )
    except TimeoutError:
        return BargeIn(error="no answer to the long prompt")
    await asyncio.sleep(BARGE_IN_AFTER_SECS)  # let the bot talk for a while
    over = await mic.say(interruption)
    try:
        await _wait(client, _Answered(over.speech_end))
    except TimeoutError:
        pass  # the stop is still measurable without an answer to the interruption
    return analyse_barge_in(client.recording.events[first_event:], over.speech_start)


Script = Callable[[VoiceClient, Microphone, SessionResult], Awaitable[None]]


async def scripted_session(
    ws_url: str, script: Script, *, keep_timeline: bool = False, noise_dbfs: float | None = None
) -> SessionResult:
    """Connect, start the microphone, wait out the greeting, run `script`, hang up.

    A failure (refused connection, server hang-up, greeting timeout) ends the session and
    is recorded in `error`; what was measured until then is kept.
    """
    result = SessionResult()
    connected = time.monotonic()
    try:
        async with (
            VoiceClient(ws_url) as client,
            Microphone(client, noise_dbfs=noise_dbfs) as mic,
        ):
            try:
                await _greet(client, connected, result)
                await script(client, mic, result)
            finally:
                if keep_timeline:
                    result.timeline = _timeline(client.recording, mic.marks, connected)
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def converse(
    ws_url: str,
    questions: Sequence[Clip],
    *,
    on_turn: Callable[[TurnTiming], None] | None = None,
    keep_timeline: bool = False,
) -> SessionResult:
    """One scripted conversation: greet, then ask each question in turn."""

    async def script(client: VoiceClient, mic: Microphone, result: SessionResult) -> None:
        for clip in questions:
            turn = await ask(client, mic, clip)
            result.turns.append(turn)
            if on_turn is not None:
                on_turn(turn)

    return await scripted_session(ws_url, script, keep_timeline=keep_timeline)


async def interrupt(
    ws_url: str, long_prompt: Clip, interruption: Clip, *, keep_timeline: bool = False
) -> SessionResult:
    """One barge-in trial in a fresh session, so no earlier answers teach the model brevity."""

    async def script(client: VoiceClient, mic: Microphone, result: SessionResult) -> None:
        result.barge_ins.append(await barge_in(client, mic, long_prompt, interruption))

    return await scripted_session(ws_url, script, keep_timeline=keep_timeline)


def _timeline(
    recording: Recording, marks: list[tuple[float, str, str]], origin: float
) -> list[list[Any]]:
    received = [
        (e.t, e.kind, round(rms_int16(e.data)) if e.kind == "audio" else e.data)
        for e in recording.events
    ]
    return [
        [round(t - origin, 4), kind, data]
        for t, kind, data in sorted(received + marks, key=lambda x: x[0])
    ]


async def run_sessions(
    ws_url: str, questions: Sequence[Clip], sessions: int, *, stagger_secs: float = 0.5
) -> list[SessionResult]:
    """Hook for capacity and soak suites: `sessions` scripted conversations at once."""

    async def one(i: int) -> SessionResult:
        await asyncio.sleep(i * stagger_secs)
        return await converse(ws_url, questions)

    return list(await asyncio.gather(*(one(i) for i in range(sessions))))
