"""The official Pipecat JavaScript client holds a spoken conversation with our /ws, unchanged.

`@pipecat-ai/client-js` + `@pipecat-ai/websocket-transport` (exact versions pinned in
official_client/package-lock.json) are installed with `npm ci` and bundled with esbuild into
one file at test time, served from a throwaway static server, and run in headless Chromium
whose fake microphone asks a question. The page records what the client reports through its
public callbacks in `window.__official` (see official_client/main.js).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ai_operator.audio import AUDIBLE_RMS, INPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES
from ai_operator.config import DEFAULT_GREETING
from conftest import ServerProcess, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CLIENT_SOURCES = Path(__file__).resolve().parent / "official_client"
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts"
CLIENT_FILES = ("package.json", "package-lock.json", "main.js", "index.html")
NPM_CI = ("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
# One self-contained IIFE file for a plain <script> tag.
ESBUILD_ARGS = ("main.js", "--bundle", "--format=iife", "--outfile=bundle.js", "--log-level=error")
BUILD_TIMEOUT_SECS = 300
CHROMIUM = "/usr/bin/chromium"
# Model work on two shared cores is slow; these are ceilings, not expectations.
READY_TIMEOUT_MS = 60_000
TURN_TIMEOUT_MS = 90_000
# The fake microphone loops this clip. The leading silence lets the greeting finish before
# the question starts; the trailing silence lets the bot answer before it is asked again.
LEAD_SILENCE_SECS = 8.0
TRAIL_SILENCE_SECS = 6.0


def _run_quietly(command: list[str], cwd: Path) -> None:
    """Run a build step; on failure the test fails with the tool's own output."""
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECS, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def official_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with index.html and bundle.js: the official client, built from the lock."""
    build = tmp_path_factory.mktemp("official-client")
    for name in CLIENT_FILES:
        shutil.copy(CLIENT_SOURCES / name, build / name)
    _run_quietly(list(NPM_CI), build)
    esbuild = str(build / "node_modules" / ".bin" / "esbuild")
    _run_quietly([esbuild, *ESBUILD_ARGS], build)
    return build


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="module")
def page_origin(official_bundle: Path) -> Iterator[str]:
    """http://127.0.0.1:<port> serving the bundle, in a thread of this process."""
    handler = functools.partial(_QuietHandler, directory=str(official_bundle))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="official-client-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(page_origin: str) -> Iterator[ServerProcess]:
    """The server with the local models, told to accept the page's origin (not its own)."""
    with running_server(["--allowed-origins", page_origin], name="official-client") as server:
        yield server


@pytest.fixture(scope="module")
def fake_mic_wav(tmp_path_factory: pytest.TempPathFactory, question_pcm: bytes) -> Path:
    from ai_operator.speech import write_wav

    def silence(secs: float) -> bytes:
        return b"\x00" * (int(secs * INPUT_SAMPLE_RATE) * SAMPLE_WIDTH_BYTES)

    clip = silence(LEAD_SILENCE_SECS) + question_pcm + silence(TRAIL_SILENCE_SECS)
    return write_wav(tmp_path_factory.mktemp("fake-mic") / "question.wav", clip)


# True once the user's question was transcribed and, after it, the bot both sent text and
# audio and stopped speaking; or as soon as the client reported an error.
_ANSWERED = """
() => {
  const s = window.__official;
  if (s.errors.length) return true;
  const asked = s.userTranscripts.find((u) => u.final && /capital|france/i.test(u.text));
  if (!asked) return false;
  return s.botOutputs.some((o) => o.t > asked.t)
    && s.botAudio.some((a) => a.t > asked.t)
    && s.botStoppedSpeaking.some((t) => t > asked.t);
}
"""


@pytest.fixture(scope="module")
def conversation(server: ServerProcess, page_origin: str, fake_mic_wav: Path) -> dict[str, Any]:
    """One conversation through the official client; returns its `window.__official`."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_mic_wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(f"{page_origin}/index.html?ws={server.ws_url}")
            try:
                page.wait_for_function(
                    "() => window.__official"
                    " && (window.__official.botReady || window.__official.errors.length)",
                    timeout=READY_TIMEOUT_MS,
                )
                page.wait_for_function(_ANSWERED, timeout=TURN_TIMEOUT_MS)
            except PlaywrightTimeout as exc:
                stalled = page.evaluate("() => window.__official")
                pytest.fail(
                    f"official client stalled: {exc}\nstate: {_summary(stalled)}\n"
                    f"console:\n" + "\n".join(console[-40:]),
                    pytrace=False,
                )
            state: dict[str, Any] = page.evaluate("() => window.__official")
            page.evaluate("() => window.__officialClient.disconnect()")
        finally:
            browser.close()
    state["console"] = console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "official-client.json").write_text(json.dumps(state, indent=1))
    return state


def _summary(state: dict[str, Any] | None) -> dict[str, Any]:
    """The recorded state without the per-chunk audio list, for failure messages."""
    if not state:
        return {}
    audio = state.get("botAudio", [])
    return {
        **{k: v for k, v in state.items() if k != "botAudio"},
        "botAudio": f"{len(audio)} chunks, {sum(a['samples'] for a in audio)} samples",
    }


def _question_time(state: dict[str, Any]) -> float:
    return min(
        u["t"]
        for u in state["userTranscripts"]
        if u["final"] and ("capital" in u["text"].lower() or "france" in u["text"].lower())
    )


def test_official_client_holds_a_spoken_conversation(conversation: dict[str, Any]) -> None:
    state = conversation
    assert state["errors"] == [], _summary(state)
    assert state["botReady"] and state["botReady"]["version"].startswith("2."), state["botReady"]

    # The greeting arrives as text and audio before the user says anything.
    first_stop = state["botStoppedSpeaking"][0]
    greeting = " ".join(o["text"] for o in state["botOutputs"] if o["t"] <= first_stop)
    assert DEFAULT_GREETING in greeting, _summary(state)

    # The question, heard through Chromium's capture path, reaches Whisper recognisably.
    asked = _question_time(state)
    user_text = " ".join(u["text"] for u in state["userTranscripts"] if u["final"]).lower()
    assert "capital" in user_text or "france" in user_text, user_text

    # The answer: the bot starts speaking, says something, and its voice is audible.
    assert any(t > asked for t in state["botStartedSpeaking"]), _summary(state)
    answer = " ".join(o["text"] for o in state["botOutputs"] if o["t"] > asked).strip()
    assert answer, _summary(state)
    answer_audio = [a for a in state["botAudio"] if a["t"] > asked]
    assert max(a["rms"] for a in answer_audio) > AUDIBLE_RMS, _summary(state)


def test_official_client_plays_the_bot_at_its_true_speed(conversation: dict[str, Any]) -> None:
    """The greeting, as the official player will play it, lasts as long as Piper speaks it."""
    from ai_operator.speech import synthesize_pcm16k

    state = conversation
    first_stop = state["botStoppedSpeaking"][0]
    if any(u["t"] <= first_stop for u in state["userTranscripts"]):
        pytest.fail("the greeting was interrupted, so its length says nothing", pytrace=False)
    greeting_samples = sum(a["samples"] for a in state["botAudio"] if a["t"] <= first_stop)
    played_secs = greeting_samples / state["playerSampleRate"]
    spoken_secs = len(synthesize_pcm16k(DEFAULT_GREETING)) / SAMPLE_WIDTH_BYTES / INPUT_SAMPLE_RATE
    assert 0.85 < played_secs / spoken_secs < 1.2, (played_secs, spoken_secs)


def test_official_client_understands_every_frame_the_server_sends(
    conversation: dict[str, Any],
) -> None:
    """No "Unknown frame kind": the server sends this client no protobuf `interruption`
    frame (it knows only `audio` and `message`), as Pipecat's own transport would on every
    user turn; it flushes its playback on RTVI `user-started-speaking`."""
    rejected = [line for line in conversation["console"] if "Failed to deserialize" in line]
    assert rejected == []
