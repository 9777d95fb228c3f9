"""The history page (web/history.html) in headless Chromium, against a scripted JSON API.

The API answers as the server's `GET /api/conversations` and `GET /api/conversations/<id>`
do (the shapes of `HistoryStore.conversations()` and `.conversation()`), with realistic
conversations: a message taken, an interrupted reply, per-turn latencies, one conversation
from the phone and one that never ended. The page reports what it loaded in
`window.__aiopHistory`; screenshots go to tests/.artifacts/.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from browser_harness import PHONE_VIEWPORT, Tab, chromium, serve_web

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TIMEOUT_MS = 20_000
HOOK = "__aiopHistory"

T0 = 1_760_000_000.0  # a fixed start, so every run looks the same


def _turn(
    speaker: str,
    text: str,
    at: float,
    secs: float,
    *,
    interrupted: bool = False,
    latencies: dict[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "speaker": speaker,
        "text": text,
        "started_at": T0 + at,
        "ended_at": T0 + at + secs,
        "interrupted": interrupted,
        "latencies": latencies or {},
    }


def _lat(v2v: float, eot: float, stt: float, llm: float, tts: float) -> dict[str, float]:
    return {"voice_to_voice": v2v, "endpointing": eot, "stt": stt, "llm": llm, "tts": tts}


MESSAGE = {
    "created_at": T0 + 41.5,
    "caller_name": "Maria Gonzalez",
    "callback": "+1 (555) 014-3399",
    "body": "Would like to move her Thursday 10:30 appointment with Dr. Patel to next week.",
}
INTERRUPTED = "Thank you, Maria. I'll make sure Dr. Patel gets your message, and she usually"
CALL = {
    "id": "c0ffee42a1b2",
    "started_at": T0,
    "ended_at": T0 + 47.0,
    "transport": "websocket",
    "providers": {"tts": "piper", "stt": "whisper", "llm": "llama-cpp"},
    "turns": [
        _turn("bot", "Hello! I'm the AI Operator. How can I help you today?", 0.4, 3.1),
        _turn("user", "Hi, I'd like to leave a message for Dr. Patel.", 4.8, 2.6),
        _turn(
            "bot",
            "Of course. May I have your name and a number where Dr. Patel can reach you?",
            8.6,
            4.0,
            latencies=_lat(1.24, 0.22, 0.31, 0.42, 0.19),
        ),
        _turn("user", "It's Maria Gonzalez, 555 014 3399.", 14.0, 2.9),
        _turn(
            "bot",
            INTERRUPTED,
            18.1,
            2.2,
            interrupted=True,
            latencies=_lat(1.08, 0.2, 0.28, 0.37, 0.17),
        ),
        _turn("user", "Sorry, it's about moving my Thursday appointment.", 20.6, 3.0),
        _turn(
            "bot",
            "Got it: you'd like to move Thursday's appointment. I've passed that on to Dr. Patel.",
            24.9,
            5.2,
            latencies=_lat(1.36, 0.24, 0.33, 0.51, 0.2),
        ),
    ],
    "messages": [MESSAGE],
}
PHONE_CALL = {
    "id": "5eed0fa11e77",
    "started_at": T0 - 86_400 * 2,
    "ended_at": T0 - 86_400 * 2 + 95.0,
    "transport": "twilio",
    "providers": {"stt": "deepgram", "llm": "openai", "tts": "cartesia"},
    "turns": [
        _turn("bot", "Hello! I'm the AI Operator. How can I help you today?", -172_800 + 0.3, 2.9),
        _turn("user", "What time does the pharmacy close on Sundays?", -172_800 + 4.0, 2.4),
        _turn(
            "bot",
            "The pharmacy closes at 4 pm on Sundays.",
            -172_800 + 7.1,
            2.3,
            latencies=_lat(0.71, 0.18, 0.12, 0.21, 0.09),
        ),
    ],
    "messages": [],
}
NEVER_ENDED = {
    "id": "dead0000beef",
    "started_at": T0 - 86_400 * 5,
    "ended_at": None,
    "transport": "websocket",
    "providers": {"stt": "whisper", "llm": "llama-cpp", "tts": "piper"},
    "turns": [_turn("bot", "Hello! I'm the AI Operator.", -432_000 + 0.4, 1.9)],
    "messages": [],
}
CONVERSATIONS = [CALL, PHONE_CALL, NEVER_ENDED]


def _summary(c: dict[str, Any]) -> dict[str, Any]:
    """A row of GET /api/conversations."""
    said = [t["text"] for t in c["turns"] if t["speaker"] == "user"]
    keys = ("id", "started_at", "ended_at", "transport", "providers")
    return {
        **{k: c[k] for k in keys},
        "turns": len(c["turns"]),
        "first_user_text": said[0] if said else None,
    }


API = {
    "/api/conversations": [_summary(c) for c in CONVERSATIONS],
    **{f"/api/conversations/{c['id']}": c for c in CONVERSATIONS},
}


def _shown(tab: Tab, conversation_id: str) -> None:
    tab.wait(f"a.shown === {json.dumps(conversation_id)}", TIMEOUT_MS, f"{conversation_id} shown")


def test_lists_conversations_and_reads_one(tmp_path: Any) -> None:
    with serve_web(API) as origin, chromium(hook=HOOK) as tab:
        page = tab.page
        page.goto(f"{origin}/history")
        tab.wait("a.listed === 3", TIMEOUT_MS, "the list")
        items = page.locator("#convos a.convo")
        listed = [items.nth(i).inner_text() for i in range(items.count())]
        nothing_picked = page.locator("#detail-empty").is_visible()

        items.first.click()
        _shown(tab, CALL["id"])
        url = page.url
        current = page.locator("#convos a[aria-current='true']").get_attribute("data-id")
        lines = page.locator("#turns > li")
        speakers = [lines.nth(i).locator(".who").inner_text() for i in range(lines.count())]
        cut = page.locator("#turns > li.interrupted")
        cut_count = cut.count()
        cut_text = cut.inner_text()
        chips = {
            key: page.locator(f"#turns > li:nth-child(3) .lat[data-stage='{key}']").inner_text()
            for key in ("voice_to_voice", "endpointing", "stt", "llm", "tts")
        }
        user_chips = page.locator("#turns > li.user .lat").count()
        greeting_chips = page.locator("#turns > li:nth-child(1) .lat").count()
        message = page.locator("#messages > li").inner_text()
        callback = page.locator("#messages a.callback").get_attribute("href")
        meta = page.locator("#detail-meta").inner_text()
        tab.screenshot("history.png")
        page.emulate_media(color_scheme="dark")
        tab.screenshot("history-dark.png")
        page.emulate_media(color_scheme="light")

        items.nth(1).click()
        _shown(tab, PHONE_CALL["id"])
        phone_url = page.url
        messages_hidden = page.locator("#messages-section").is_hidden()
        phone_meta = page.locator("#detail-meta").inner_text()

        # A phone: the list, then one conversation with a way back.
        page.set_viewport_size(PHONE_VIEWPORT)
        page.goto(f"{origin}/history")
        tab.wait("a.listed === 3", TIMEOUT_MS, "the list on a phone")
        tab.screenshot("history-phone-list.png", full_page=True)
        list_only = page.locator("#convos").is_visible() and page.locator("#detail").is_hidden()
        page.locator("#convos a.convo").first.click()
        _shown(tab, CALL["id"])
        detail_only = page.locator("#detail").is_visible() and page.locator("#convos").is_hidden()
        back_visible = page.locator("#back").is_visible()
        tab.screenshot("history-phone.png", full_page=True)
        page.locator("#back").click()
        tab.wait("a.listed === 3 && a.shown === null", TIMEOUT_MS, "back to the list")
        back_to_list = page.locator("#convos").is_visible()
        errors = tab.state()["errors"]

    assert not tab.page_errors() and errors == [], (errors, tab.console)

    # The list: newest first, what the caller said first, how long, how many turns.
    assert "Hi, I'd like to leave a message for Dr. Patel." in listed[0], listed
    assert "47 s" in listed[0] and "7 turns" in listed[0] and "websocket" in listed[0], listed
    assert "pharmacy" in listed[1] and "1 min 35 s" in listed[1] and "twilio" in listed[1]
    assert "No words from the caller" in listed[2] and "not ended" in listed[2], listed
    assert nothing_picked

    # One conversation: linkable, marked in the list, every turn in order.
    assert url.endswith(f"/history#{CALL['id']}") and current == CALL["id"], (url, current)
    assert [s.split()[0] for s in speakers] == ["OPERATOR", "CALLER"] * 3 + ["OPERATOR"], speakers
    assert speakers[2].split()[1] == "0:08", speakers  # when, into the call
    # The interrupted reply, visibly so.
    assert cut_count == 1 and "INTERRUPTED" in cut_text.upper(), cut_text
    assert INTERRUPTED in cut_text and "cut off" in cut_text, cut_text
    # Latency per operator turn, none on the caller's turns or the greeting.
    assert chips == {
        "voice_to_voice": "V2V 1.24 s",
        "endpointing": "EOT 0.22 s",
        "stt": "STT 0.31 s",
        "llm": "LLM 0.42 s",
        "tts": "TTS 0.19 s",
    }, chips
    assert user_chips == 0 and greeting_chips == 0, (user_chips, greeting_chips)
    # The message taken.
    assert "Maria Gonzalez" in message and MESSAGE["body"] in message, message
    assert "+1 (555) 014-3399" in message and callback == "tel:+15550143399", (message, callback)
    # The summary.
    assert "STT whisper · LLM llama-cpp · TTS piper" in meta, meta
    assert "7 (1 interrupted)" in meta and "1.24 s" in meta, meta  # median of 1.08/1.24/1.36

    assert phone_url.endswith(f"#{PHONE_CALL['id']}") and messages_hidden, phone_url
    assert "STT deepgram · LLM openai · TTS cartesia" in phone_meta, phone_meta

    assert list_only and detail_only and back_visible and back_to_list


def test_deep_link_unknown_id_and_a_failing_api() -> None:
    with serve_web(API) as origin, chromium(hook=HOOK) as tab:
        page = tab.page
        # The main page links here.
        page.goto(f"{origin}/")
        page.get_by_role("link", name="History").click()
        page.wait_for_url(f"{origin}/history")
        tab.wait("a.listed === 3", TIMEOUT_MS, "the list, from the main page's link")

        page.goto(f"{origin}/history?id={PHONE_CALL['id']}")
        _shown(tab, PHONE_CALL["id"])

        page.goto(f"{origin}/history#nope")
        tab.wait("a.errors.length", TIMEOUT_MS, "the unknown id explained")
        unknown = page.get_by_role("alert").inner_text()

    failing = {"/api/conversations": (500, {"error": "database is locked"})}
    with serve_web(failing) as origin, chromium(hook=HOOK) as tab:
        tab.page.goto(f"{origin}/history")
        tab.wait("a.errors.length", TIMEOUT_MS, "the failure explained")
        failed = tab.page.get_by_role("alert").inner_text()
        empty = tab.page.locator("#convos > li").count()

    assert unknown == "There is no conversation with id “nope”.", unknown
    assert failed == "The server answered HTTP 500 for api/conversations.", failed
    assert empty == 0
