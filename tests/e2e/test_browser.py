"""The web client (src/ai_operator/web) in headless Chromium with a fake microphone.

- A spoken conversation with the real server and its local models: the greeting plays,
  the question is transcribed, the answer is shown and heard, latency is read out.
- Against a scripted /ws server (scripted_ws.py), steps the test drives one at a time:
  every status the page shows, the transcript (the user's interim words; the bot's words
  only once heard), the latency readout, barge-in and its cue, the device pickers, the
  volume, mute, hanging up, reconnecting after a dropped socket, the page's protobuf
  frames as Pipecat decodes them, server notices and errors, and a refusal explained.
- A denied microphone and an unreachable server each end in a clear message.

The page reports its counters in `window.__aiop` (see web/app.js); the tests only read it.
Screenshots go to tests/.artifacts/. With AI_OPERATOR_UPDATE_SCREENSHOT=1 the real
conversation's also replaces docs/screenshot.png (the README's picture); otherwise a test
run leaves the working tree as it found it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_harness import (
    ARTIFACTS,
    PHONE_VIEWPORT,
    ROOT,
    Tab,
    chromium,
    closed_port,
    serve_web,
)
from scripted_ws import (
    bot_output,
    frame,
    interruption,
    rtvi,
    step_server,
    tone,
)

from ai_operator.audio import INPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# Model work on two shared cores is slow; these are ceilings, not expectations.
READY_TIMEOUT_MS = 60_000
TURN_TIMEOUT_MS = 120_000
SCRIPT_TIMEOUT_MS = 20_000
SCRIPT_TIMEOUT_SECS = SCRIPT_TIMEOUT_MS / 1000

# The fake microphone loops this clip. The leading silence lets the greeting finish before
# the question; the page is muted (Space) once the question is transcribed, so the loop
# does not ask again over the answer.
LEAD_SILENCE_SECS = 6.0
TRAIL_SILENCE_SECS = 6.0
QUESTION = "What is the capital of France?"
# The answer must be heard for at least this long.
MIN_ANSWER_SAMPLES = INPUT_SAMPLE_RATE // 2
# The playback resampler holds back a few samples of history; more than this is a loss.
PLAYBACK_SLACK_SAMPLES = 64
CLIENT_FRAME_BYTES = INPUT_SAMPLE_RATE // 50 * SAMPLE_WIDTH_BYTES  # 20 ms


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    with serve_web() as origin:
        yield origin


# ---------------------------------------------------------------------------------------
# A spoken conversation with the real server
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_mic_wav(tmp_path_factory: pytest.TempPathFactory, question_pcm: bytes) -> Path:
    from ai_operator.speech import write_wav

    def silence(secs: float) -> bytes:
        return b"\x00" * (int(secs * INPUT_SAMPLE_RATE) * SAMPLE_WIDTH_BYTES)

    clip = silence(LEAD_SILENCE_SECS) + question_pcm + silence(TRAIL_SILENCE_SECS)
    return write_wav(tmp_path_factory.mktemp("fake-mic") / "question.wav", clip)


_ASKED = (
    "a.alerts.length"
    " || a.transcript.some((e) => e.speaker === 'user' && /capital|france/i.test(e.text))"
)

# The question was heard, and after it the bot said something, was heard, and fell silent;
# or the page raised an alert (reported by the assertions that follow).
_ANSWERED = """
a.alerts.length || (() => {
  const t = a.transcript;
  const asked = t.findIndex((e) => e.speaker === 'user' && /capital|france/i.test(e.text));
  const reply = t.slice(asked + 1).find((e) => e.speaker === 'bot' && e.text.trim());
  return asked >= 0 && reply && a.state === 'listening' && a.stats.audioSamplesBuffered === 0
    && a.turns.some((turn) => turn.voiceToVoiceMs !== null);
})()
"""


def _asks(text: str) -> bool:
    """Whisper heard the question well enough (Chromium's capture processing blurs it)."""
    return "capital" in text.lower() or "france" in text.lower()


def test_spoken_conversation_with_the_real_server(live_server, fake_mic_wav: Path) -> None:
    with chromium(fake_mic=fake_mic_wav) as tab:
        page = tab.page
        page.goto(f"{live_server.base_url}/")
        page.get_by_role("button", name="Connect").click()
        tab.wait("a.botReady || a.alerts.length", READY_TIMEOUT_MS, "bot-ready")
        tab.wait(_ASKED, TURN_TIMEOUT_MS, "the question in the transcript")
        before_answer = tab.state()["stats"]["audioSamplesPlayed"]
        page.keyboard.press("Space")  # mute, so the looping clip does not ask again
        tab.wait("a.muted", SCRIPT_TIMEOUT_MS, "muted by the Space key")
        tab.wait(_ANSWERED, TURN_TIMEOUT_MS, "an answer, heard and finished")
        state = tab.state()

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        shot = ARTIFACTS / "browser-conversation.png"
        page.screenshot(path=str(shot))
        if os.environ.get("AI_OPERATOR_UPDATE_SCREENSHOT") == "1":
            shutil.copy(shot, ROOT / "docs" / "screenshot.png")
        page.set_viewport_size(PHONE_VIEWPORT)
        page.screenshot(path=str(ARTIFACTS / "browser-conversation-phone.png"), full_page=True)
        v2v_text = page.locator("#latency-latest dd[data-stage='v2v']").inner_text()
        (ARTIFACTS / "browser-conversation.json").write_text(json.dumps(state, indent=1))

    stats = state["stats"]
    assert state["alerts"] == [], state["alerts"]
    assert [n for n in state["notices"] if n["kind"] == "error"] == [], state["notices"]
    assert stats["badFrames"] == 0 and not tab.page_errors(), tab.console
    assert stats["audioFramesSent"] > 100, stats  # the mic streamed for over 2 s

    entries = state["transcript"]
    # The greeting, heard in full before the question.
    assert entries[0]["speaker"] == "bot" and "AI Operator" in entries[0]["text"], entries
    assert not entries[0]["interrupted"], entries
    # Muted once the question was heard, the looping clip was not heard again.
    assert [e["speaker"] for e in entries].count("user") == 1, entries
    # The question, heard through Chromium's capture processing and our resampler.
    asked = next(i for i, e in enumerate(entries) if e["speaker"] == "user" and _asks(e["text"]))
    assert entries[asked]["final"], entries[asked]
    # The answer: words shown, audio played, and none of it lost in the page.
    answer = " ".join(e["text"] for e in entries[asked + 1 :] if e["speaker"] == "bot").strip()
    assert answer, entries
    assert stats["audioSamplesPlayed"] - before_answer >= MIN_ANSWER_SAMPLES, stats
    assert stats["audioSamplesDropped"] == 0, stats
    lost = stats["audioSamplesReceived"] - stats["audioSamplesPlayed"]
    assert lost <= PLAYBACK_SLACK_SAMPLES, stats

    # Latency: voice-to-voice measured in the page, per-stage TTFB from the server.
    turn = next(t for t in state["turns"] if t["voiceToVoiceMs"] is not None)
    assert 50 < turn["voiceToVoiceMs"] < 60_000, turn
    assert turn["ttfb"]["llm"] is not None and turn["ttfb"]["tts"] is not None, turn
    assert v2v_text.endswith(" s") and v2v_text != "—", v2v_text


# ---------------------------------------------------------------------------------------
# Scripted steps: what the page shows at each
# ---------------------------------------------------------------------------------------

BOT_READY = {"version": "2.2.0", "about": {"library": "scripted"}}
ASKED = "What's the weather like today?"
SAID = "It is sunny and warm today."
UNSAID = "Would you like the forecast for the week?"
ANSWER = f"{SAID} {UNSAID}"
TURN_METRICS = {
    "type": "turn-metrics",
    "voice_to_voice": 0.93,
    "endpointing": 0.21,
    "stt": 0.31,
    "llm": 0.4,
    "tts": 0.18,
}
LLM_TTFB = {"ttfb": [{"processor": "LlamaCppLLMService#0", "model": "smollm2", "value": 0.25}]}
# Interrupt once this much of the reply has played; the rest must be dropped at once.
PLAY_BEFORE_INTERRUPT = int(0.3 * INPUT_SAMPLE_RATE)


# Each change of the pill's cue: "<data-cue>: <the cue's visible text>".
_RECORD_CUES = """() => {
  window.__cues = [];
  const pill = document.getElementById('status');
  const cue = document.getElementById('status-cue');
  const shown = () => (cue.hidden ? '' : cue.textContent);
  const record = () => window.__cues.push(`${pill.dataset.cue}: ${shown()}`);
  new MutationObserver(record)
    .observe(pill, { attributes: true, subtree: true, attributeFilter: ['data-cue', 'hidden'] });
}"""


def expect_state(tab: Tab, state: str, text: str) -> None:
    """The status pill shows `state` (its data-state attribute) and says `text`."""
    tab.wait(
        f"a.state === {json.dumps(state)}"
        f" && document.getElementById('status').dataset.state === {json.dumps(state)}"
        f" && document.getElementById('status-text').textContent === {json.dumps(text)}",
        SCRIPT_TIMEOUT_MS,
        f"status {state!r} saying {text!r}",
    )


def latency_cell(tab: Tab, stage: str) -> str:
    return tab.text(f"#latency-latest dd[data-stage='{stage}']")


def test_every_state_transcript_latency_and_the_interrupted_cue(page_origin: str) -> None:
    with step_server() as (server, ws_url), chromium() as tab:
        page = tab.page
        page.goto(f"{page_origin}/?ws={ws_url}")
        expect_state(tab, "disconnected", "Disconnected")
        page.get_by_role("button", name="Connect").click()
        sock = server.socket(1, SCRIPT_TIMEOUT_SECS)
        expect_state(tab, "connecting", "Connecting…")  # open, but no bot-ready yet
        sock.send(rtvi("bot-ready", BOT_READY))
        expect_state(tab, "listening", "Listening")
        tab.wait(
            "Number(document.getElementById('meter').getAttribute('aria-valuenow')) > 0",
            SCRIPT_TIMEOUT_MS,
            "the microphone level meter moving",
        )

        # The user speaks: their words as they are recognised, then the final ones.
        sock.send(
            rtvi("user-started-speaking"),
            rtvi("user-transcription", {"text": "what's the", "final": False}),
        )
        expect_state(tab, "user-speaking", "You're speaking")
        tab.wait(
            "document.querySelector('.line.user .interim')?.textContent.trim() === \"what's the\"",
            SCRIPT_TIMEOUT_MS,
            "the interim words shown",
        )
        sock.send(
            rtvi("user-transcription", {"text": ASKED, "final": True}),
            rtvi("user-stopped-speaking"),
        )
        expect_state(tab, "thinking", "Thinking…")

        # The bot starts: its words wait for its voice (a marker notice orders the check).
        sock.send(
            rtvi("bot-started-speaking"),
            bot_output(ANSWER, 1),
            rtvi("server-message", {"type": "marker"}),
        )
        tab.wait("a.notices.some((n) => n.text === 'marker')", SCRIPT_TIMEOUT_MS, "the marker")
        before_voice = tab.state()
        shown_before_voice = tab.text("#transcript")
        expect_state(tab, "bot-speaking", "Operator speaking")

        # Its voice plays, and the words said so far appear; those still to come do not.
        sock.send(*tone(3.0))
        sock.send(bot_output(ANSWER, 1, spoken=SAID, status="in-progress"))
        sock.send(rtvi("metrics", LLM_TTFB), rtvi("server-message", TURN_METRICS))
        tab.wait(
            f"a.transcript.some((e) => e.speaker === 'bot' && e.text === {json.dumps(SAID)})"
            f" && a.stats.audioSamplesPlayed >= {PLAY_BEFORE_INTERRUPT}"
            " && a.turns[0] && a.turns[0].voiceToVoiceMs !== null"
            " && a.turns[0].endpointing !== null",
            SCRIPT_TIMEOUT_MS,
            "the reply heard, its first sentence shown, its latency read out",
        )
        speaking = tab.state()
        shown_speaking = tab.text(".line.bot")
        latency = {s: latency_cell(tab, s) for s in ("v2v", "eot", "stt", "llm", "tts")}

        # The user barges in: playback stops, the reply is marked, the pill flashes (for a
        # moment only, so every change to the pill is recorded).
        page.evaluate(_RECORD_CUES)
        sock.send(rtvi("user-started-speaking"), interruption(), rtvi("bot-interrupted"))
        tab.wait(
            "a.interruptCues === 1 && a.state === 'user-speaking'"
            " && window.__cues.includes('interrupted: Interrupted')",
            SCRIPT_TIMEOUT_MS,
            "the interrupted cue",
        )
        tab.screenshot("browser-states.png")
        tab.wait("a.stats.audioSamplesBuffered === 0", SCRIPT_TIMEOUT_MS, "the reply flushed")
        interrupted = tab.state()
        badge = tab.text(".line.bot.interrupted .badge")
        struck = tab.text(".line.bot.interrupted .cut")

        # The next turn is answered in full, and the page is listening again.
        sock.send(
            rtvi("bot-stopped-speaking"),
            rtvi("user-transcription", {"text": "No, thanks.", "final": True}),
            rtvi("user-stopped-speaking"),
        )
        expect_state(tab, "thinking", "Thinking…")
        sock.send(rtvi("bot-started-speaking"), *tone(0.4))
        sock.send(bot_output("Goodbye!", 2, spoken="Goodbye!", status="completed"))
        sock.send(rtvi("bot-stopped-speaking"))
        tab.wait(
            "a.transcript.some((e) => e.speaker === 'bot' && e.text === 'Goodbye!')"
            " && a.stats.audioSamplesBuffered === 0",
            SCRIPT_TIMEOUT_MS,
            "the second reply",
        )
        expect_state(tab, "listening", "Listening")
        done = tab.state()
        history_rows = page.locator("#latency-history tr").count()
        tab.screenshot("browser-states-done.png")
        page.set_viewport_size(PHONE_VIEWPORT)
        tab.screenshot("browser-states-phone.png", full_page=True)
        page.emulate_media(color_scheme="dark")
        tab.screenshot("browser-states-phone-dark.png", full_page=True)

    assert not server.errors and not tab.page_errors(), (server.errors, tab.console)
    assert done["alerts"] == [] and done["stats"]["badFrames"] == 0, done

    # Nothing of the reply was shown before it was heard.
    assert [e["speaker"] for e in before_voice["transcript"]] == ["user"], before_voice
    assert "sunny" not in shown_before_voice, shown_before_voice
    # Once heard, the words said so far, and not the words still to come.
    assert SAID in shown_speaking and "forecast" not in shown_speaking, shown_speaking

    # Latency: voice-to-voice timed in the page; the stages from the server, where the
    # RTVI metrics came first (LLM) they are kept, turn-metrics fills in the rest.
    turn = speaking["turns"][0]
    assert 0 < turn["voiceToVoiceMs"] < 10_000, turn
    shown_v2v = float(latency.pop("v2v").removesuffix(" s"))
    assert shown_v2v == pytest.approx(turn["voiceToVoiceMs"] / 1000, abs=0.006), (latency, turn)
    assert latency == {"eot": "0.21 s", "stt": "0.31 s", "llm": "0.25 s", "tts": "0.18 s"}

    # The interrupted reply: marked, its unsaid words struck out, its audio dropped.
    bot = interrupted["transcript"][1]
    assert bot["interrupted"] and bot["text"] == SAID and bot["cut"] == UNSAID, bot
    assert badge == "interrupted" and struck == UNSAID, (badge, struck)
    stats = interrupted["stats"]
    assert stats["audioSamplesPlayed"] < 2 * INPUT_SAMPLE_RATE, stats
    assert stats["audioSamplesDropped"] > 0, stats

    # The second turn: heard in full, no new cue, both turns in the latency table.
    speakers = [e["speaker"] for e in done["transcript"]]
    assert speakers == ["user", "bot", "user", "bot"], done["transcript"]
    assert not done["transcript"][3]["interrupted"], done["transcript"]
    assert done["interruptCues"] == 1 and history_rows == 2, (done["interruptCues"], history_rows)


def test_devices_volume_mute_keyboard_and_hanging_up(page_origin: str) -> None:
    with step_server() as (server, ws_url), chromium() as tab:
        page = tab.page
        page.goto(f"{page_origin}/?ws={ws_url}")
        # The pickers list the fake devices before any call.
        tab.wait(
            "a.devices.inputs.some((d) => d.label === 'Fake Audio Input 1')"
            " && a.devices.outputs.some((d) => d.label === 'Fake Audio Output 1')",
            SCRIPT_TIMEOUT_MS,
            "the device lists",
        )
        pickers_visible = (
            page.locator("#mic-select").is_visible()
            and page.locator("#speaker-select").is_visible()
        )
        # The volume set before a call applies to it.
        page.get_by_label("Volume").fill("30")
        # Keyboard only: Tab reaches the Connect button with a visible focus ring; Enter presses it.
        for _ in range(10):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.id") == "connect":
                break
        ring = page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement);"
            " return [document.activeElement.id, s.outlineStyle, s.outlineWidth]; }"
        )
        page.keyboard.press("Enter")
        sock = server.socket(1, SCRIPT_TIMEOUT_SECS)
        sock.send(rtvi("bot-ready", BOT_READY))
        expect_state(tab, "listening", "Listening")
        tab.wait("Math.abs(a.playbackGain - 0.3) < 0.01", SCRIPT_TIMEOUT_MS, "the gain at 30%")

        page.get_by_label("Volume").fill("75")
        tab.wait("Math.abs(a.playbackGain - 0.75) < 0.01", SCRIPT_TIMEOUT_MS, "the gain at 75%")
        volume_text = tab.text("#volume-value")

        page.locator("#speaker-select").select_option(label="Fake Audio Output 2")
        speaker = next(d for d in tab.state()["devices"]["outputs"] if d["label"].endswith("2"))
        tab.wait(
            f"a.devices.speakerId === {json.dumps(speaker['id'])}",
            SCRIPT_TIMEOUT_MS,
            "the bot routed to the chosen speaker",
        )
        page.locator("#mic-select").select_option(label="Fake Audio Input 1")
        tab.wait(
            "a.devices.micLabel === 'Fake Audio Input 1'", SCRIPT_TIMEOUT_MS, "the mic switched"
        )
        frames = sock.audio_frames
        mic_streams_on = sock.wait_audio(frames + 25, SCRIPT_TIMEOUT_SECS)

        # Space mutes and unmutes (not while a control that takes typing has focus).
        page.locator("#transcript-scroll").focus()
        page.keyboard.press("Space")
        expect_state(tab, "listening", "Listening · muted")
        mute_pressed = page.locator("#mute").get_attribute("aria-pressed")
        page.keyboard.press("Space")
        expect_state(tab, "listening", "Listening")

        # Hanging up ends the call for good: a clean close, no reconnect, no alert.
        page.get_by_role("button", name="Disconnect").click()
        expect_state(tab, "disconnected", "Disconnected")
        hung_up = tab.state()
        closed = sock.closed.wait(SCRIPT_TIMEOUT_SECS)

    assert not server.errors and not tab.page_errors(), (server.errors, tab.console)
    assert pickers_visible and hung_up["devices"]["speakerSupported"], hung_up["devices"]
    assert ring == ["connect", "solid", "3px"], ring
    assert volume_text == "75%", volume_text
    assert mic_streams_on, (frames, sock.audio_frames)
    assert mute_pressed == "true", mute_pressed
    assert closed and sock.close_code == 1000, sock.close_code
    assert hung_up["reconnect"] is None and hung_up["reconnectDelays"] == [], hung_up
    assert hung_up["alerts"] == [] and len(server.sockets) == 1, hung_up["alerts"]


def test_reconnects_with_backoff_after_a_dropped_socket(page_origin: str) -> None:
    with step_server() as (server, ws_url), chromium() as tab:
        page = tab.page
        page.goto(f"{page_origin}/?ws={ws_url}")
        page.evaluate("() => { window.__sameDocument = true; }")
        page.get_by_role("button", name="Connect").click()
        first = server.socket(1, SCRIPT_TIMEOUT_SECS)
        first.send(
            rtvi("bot-ready", BOT_READY),
            rtvi("user-transcription", {"text": "Before the drop.", "final": True}),
        )
        expect_state(tab, "listening", "Listening")

        # The network drops the socket: the page waits, then opens a new one.
        first.drop()
        second = server.socket(2, SCRIPT_TIMEOUT_SECS)
        reconnecting = tab.state()
        # That one drops too, before the bot is ready: the page waits longer.
        second.drop()
        third = server.socket(3, SCRIPT_TIMEOUT_SECS)
        third.send(rtvi("bot-ready", BOT_READY))
        tab.wait("a.reconnects === 1", SCRIPT_TIMEOUT_MS, "the call resumed")
        expect_state(tab, "listening", "Listening")
        resumed = tab.state()
        alert_hidden = page.locator("#alert").is_hidden()
        same_document = page.evaluate("() => window.__sameDocument === true")
        streaming = third.wait_audio(25, SCRIPT_TIMEOUT_SECS)
        tab.screenshot("browser-reconnected.png")

    assert not server.errors and not tab.page_errors(), (server.errors, tab.console)
    assert same_document, "the page reloaded"
    # While away: the reconnecting state, explained.
    assert reconnecting["state"] == "reconnecting", reconnecting["state"]
    assert any("Reconnecting in" in a and "attempt 1 of 6" in a for a in reconnecting["alerts"])
    # Backoff: the first wait 0.25-0.5 s, the second twice that; the sockets opened no sooner.
    first_wait, second_wait = resumed["reconnectDelays"]
    assert 250 <= first_wait <= 500 and 500 <= second_wait <= 1000, resumed["reconnectDelays"]
    assert first.dropped_at is not None and second.dropped_at is not None
    assert second.opened_at - first.dropped_at >= first_wait / 1000
    assert third.opened_at - second.dropped_at >= second_wait / 1000
    # Resumed: the transcript kept, the gap marked, the alert gone, the mic streaming again.
    texts = [e["text"] for e in resumed["transcript"]]
    assert texts[0] == "Before the drop." and "Connection lost" in texts[1], texts
    assert "Reconnected" in texts[-1], texts
    assert alert_hidden and resumed["reconnect"] is None, resumed
    assert streaming, third.audio_frames


def test_wire_format_notices_errors_and_a_refusal(page_origin: str) -> None:
    failover = {
        "type": "provider-failover",
        "stage": "llm",
        "provider": "openai",
        "fallback": "local",
        "reason": "HTTP 503",
        "permanent": False,
        "retry_after_secs": 30,
    }
    close_reason = "test: too many sessions"
    with step_server() as (server, ws_url), chromium() as tab:
        tab.page.goto(f"{page_origin}/?ws={ws_url}")
        tab.page.get_by_role("button", name="Connect").click()
        sock = server.socket(1, SCRIPT_TIMEOUT_SECS)
        sock.send(
            rtvi("bot-ready", BOT_READY),
            rtvi("server-message", failover),
            rtvi("server-message", {"type": "session-info", "id": "abc123"}),
            rtvi("error", {"error": "llm: upstream timed out", "fatal": False}),
            # Frames the page has no use for are skipped; bytes that do not parse are reported.
            frame(text={"id": 1, "name": "TextFrame#0", "text": "ignored"}),
            frame(transcription={"id": 2, "text": "ignored", "user_id": "u"}),
            b"\x12\xff",  # Frame.audio, truncated
        )
        tab.wait("a.stats.badFrames === 1", SCRIPT_TIMEOUT_MS, "the notices")
        assert sock.wait_audio(10, SCRIPT_TIMEOUT_SECS), sock.received[:5]
        # The server is full: it says so and closes; the page explains and does not retry.
        sock.close(1013, close_reason)
        tab.wait("a.alerts.length && a.state === 'disconnected'", SCRIPT_TIMEOUT_MS, "the close")
        closed = tab.state()
        tab.screenshot("browser-refused.png")
        tab.page.emulate_media(color_scheme="dark")
        tab.screenshot("browser-refused-dark.png")

    assert not server.errors and not tab.page_errors(), (server.errors, tab.console)

    # What the page sent, as Pipecat's own protobuf code reads it.
    first_kind, first = sock.received[0]
    assert first_kind == "message" and first["type"] == "client-ready", sock.received[:3]
    assert first["label"] == "rtvi-ai" and first["id"], first
    assert first["data"]["version"] == "2.2.0", first
    assert first["data"]["about"]["library"] == "ai-operator-web", first
    audio = [info for kind, info in sock.received if kind == "audio"]
    assert set(audio) == {(CLIENT_FRAME_BYTES, INPUT_SAMPLE_RATE, 1)}, set(audio)

    # Server notices and errors, readable; the close explained with the server's reason.
    notices = [n["text"] for n in closed["notices"]]
    failed = 'The LLM provider "openai" failed (HTTP 503); using the local LLM for now'
    assert any(n.startswith(failed) for n in notices), notices
    assert any("session info" in n and "abc123" in n for n in notices), notices
    assert any("Server error: llm: upstream timed out" in n for n in notices), notices
    assert any("Unreadable message from the server" in n for n in notices), notices
    busy = f"Disconnected: the server is busy; try again in a moment — {close_reason}."
    assert closed["alerts"] == [busy], closed["alerts"]
    assert closed["reconnect"] is None and closed["reconnectDelays"] == [], closed
    assert len(server.sockets) == 1


# ---------------------------------------------------------------------------------------
# Failures the person at the page must understand
# ---------------------------------------------------------------------------------------


def test_denied_microphone_is_explained(page_origin: str) -> None:
    with chromium(allow_mic=False) as tab:
        tab.page.context.clear_permissions()
        tab.page.goto(f"{page_origin}/?ws=ws://127.0.0.1:{closed_port()}/ws")
        tab.page.get_by_role("button", name="Connect").click()
        tab.wait("a.alerts.length", SCRIPT_TIMEOUT_MS, "an alert")
        state = tab.state()
        alert = tab.page.get_by_role("alert").inner_text()
        button = tab.page.locator("#connect").inner_text()
    assert "Microphone access was denied" in alert, alert
    assert state["state"] == "disconnected" and button == "Connect", state
    assert state["stats"]["audioFramesSent"] == 0, state


def test_unreachable_server_is_explained(page_origin: str) -> None:
    ws_url = f"ws://127.0.0.1:{closed_port()}/ws"
    with chromium() as tab:
        tab.page.goto(f"{page_origin}/?ws={ws_url}")
        tab.page.get_by_role("button", name="Connect").click()
        tab.wait("a.alerts.length", SCRIPT_TIMEOUT_MS, "an alert")
        state = tab.state()
        alert = tab.page.get_by_role("alert").inner_text()
    assert f"Could not reach the server at {ws_url}" in alert, alert
    # Never connected: nothing to resume, so no retrying in silence.
    assert state["state"] == "disconnected" and state["reconnectDelays"] == [], state
