"""`python -m bench.turn_taking`: how human the turn-taking feels, in numbers.

Starts the real server (local models) and plays scripted calls against it with
`ai_operator.listener`: a loudspeaker that plays the bot's audio like the web page does
(and flushes it on `interruption`) and a microphone that mixes scripted speech (the Piper
voice) with the loudspeaker fed back as echo. Prints:

- barge-in stop latency: user's speech onset -> the bot's audio stops at the loudspeaker;
- false interruptions on backchannels ("mm-hmm", "yeah"...) and the gap they leave;
- self-interruptions when the bot's own voice leaks back at -20 dB, 50-150 ms late;
- cut-ins during mid-sentence pauses ("I'd like to book a table for ... two people"):
  the pipeline committed the turn during the pause, and how often the bot also spoke;
- end-of-turn delay: end of a complete question -> its transcript (the STT's share),
  -> `user-stopped-speaking` (the pipeline commits) and -> first bot audio.

Writes the raw numbers to bench/results/turn_taking-<time>.json. Extra `serve` options
(e.g. `--server-arg=--vad-start-secs=0.15`) let one configuration be compared with another.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ai_operator.client import VoiceClient
from ai_operator.listener import Echo, ScriptedCall, hesitation
from ai_operator.speech import synthesize_pcm16k as _synthesize
from bench.harness import wait_or_kill

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"

GREETING = (
    "Welcome to the AI Operator. I can answer questions about many topics, tell you about "
    "the weather, help you plan a trip, and keep you company while you cook dinner. Today I "
    "would like to tell you a little about how I work, so that our conversation feels "
    "natural and easy for you. Please ask me anything at all."
)
INTERRUPTIONS = (
    "Sorry to interrupt but I have a question.",
    "Hold on a second please.",
    "Can you tell me about the weather instead?",
    "Excuse me, I need to ask something else.",
)
BACKCHANNELS = ("Mm-hmm.", "Yeah.", "Okay.", "Right.", "Uh-huh.", "I see.", "Sure.", "Yeah, yeah.")
# (words before a hesitation, words after it).
PAUSE_CLIPS = (
    ("I'd like to book a table for", "two people tomorrow."),
    ("My name is", "John Smith and I live in Boston."),
    ("Can you tell me the way to", "the train station?"),
    ("I was thinking that maybe we could", "go to the beach."),
    ("I'd like to book a table", "for two people tomorrow."),
)
PAUSE_SECS = 0.8
# Complete utterances: three questions, a request and a statement (only the statement
# waits --turn-statement-wait-secs; it is the pause clip's sentence said in one go).
QUESTIONS = (
    "What is the capital of France?",
    "Tell me a joke.",
    "How far away is the moon?",
    "What should I cook for dinner tonight?",
    "I'd like to book a table for two people tomorrow.",
)
ECHO_DELAYS = (0.05, 0.1, 0.15)
SCENARIOS = ("barge_in", "backchannel", "echo", "barge_in_echo", "pause", "end_of_turn")
ECHO_GAIN_DB = -20.0
# Bot audio heard before the user speaks over it.
LEAD_IN_SECS = 2.0
# How long after the user's speech the call keeps listening.
TAIL_SECS = 4.0
TIMEOUT = 60.0


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`ai-operator serve` in a subprocess, ready when /healthz answers."""

    def __init__(self, args: list[str], name: str) -> None:
        self.port = free_port()
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.log_path = RESULTS / f"turn-taking-{name}-{self.port}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ai_operator", "serve", "--port", str(self.port),
             "--env-file", "/dev/null", *args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early, see {self.log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready, see {self.log_path}")

    def stop(self) -> None:
        self.proc.terminate()
        wait_or_kill(self.proc, timeout=15)
        self._log.close()


# --------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------


@functools.cache
def synthesize_pcm16k(text: str) -> bytes:
    """Piper speech for `text`, made once: synthesising blocks, so never during a call."""
    return _synthesize(text)


# --------------------------------------------------------------------------------------
# Scenarios: each is one call (one session)
# --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    scenario: str
    clip: str
    values: dict[str, Any] = field(default_factory=dict)


async def overlap_call(url: str, clip: str, *, echo: Echo | None = None) -> dict[str, Any]:
    """The bot greets; after LEAD_IN_SECS the user says `clip` (or nothing) over it."""
    async with VoiceClient(url) as client:
        call = ScriptedCall(client, echo=echo)
        call.start()
        try:
            await client.ready()
            await asyncio.wait_for(call.wait_heard(LEAD_IN_SECS), TIMEOUT)
            onset = end = call.now()
            if clip:
                onset, end = await call.say(synthesize_pcm16k(clip))
            await asyncio.sleep(TAIL_SECS)
            call.sync()
        finally:
            await call.stop()
    speaker = call.speaker
    cuts = [e.t for e in client.recording.of("interruption") if e.t >= onset - 0.1]
    values: dict[str, Any] = {
        "interrupted": bool(cuts),
        "speech_secs": round(end - onset, 3),
        "heard_secs": round(speaker.audible_secs(), 2),
        "client_buffer_max": round(speaker.max_buffered, 3),
        "underruns": speaker.underruns,
    }
    if cuts:
        # The bot's audio that started before the interruption reached the client.
        runs = [(s, e) for s, e in speaker.audible_runs() if s < cuts[0] + 0.05]
        values["stop_latency"] = round(max(e for _, e in runs) - onset, 3) if runs else None
        values["interruption_after"] = round(cuts[0] - onset, 3)
    elif clip:
        # Silence in the bot's speech around the user's words (its pause for them).
        runs = speaker.audible_runs()
        window = (onset, end + 0.5)
        gaps = [
            b[0] - a[1]
            for a, b in zip(runs, runs[1:], strict=False)
            if b[0] > window[0] and a[1] < window[1]
        ]
        values["gap"] = round(max(gaps, default=0.0), 3)
    return values


async def turn_call(url: str, parts: list[bytes]) -> dict[str, Any]:
    """The user speaks `parts` back to back (pauses are in the audio); no greeting."""
    async with VoiceClient(url) as client:
        call = ScriptedCall(client)
        call.start()
        try:
            await client.ready()
            await asyncio.sleep(0.5)
            spans = [call.say(pcm) for pcm in parts]
            said = [await span for span in spans]
            await asyncio.sleep(TAIL_SECS + 2.0)
            call.sync()
        finally:
            await call.stop()
    end = said[-1][1]
    first_end = said[0][1]
    commits = [e.t for e in client.recording.of("user-stopped-speaking")]
    audio = [s for s, _ in call.speaker.audible_runs()]
    values: dict[str, Any] = {}
    if len(parts) > 1:
        resumed = said[1][0]
        values["spoke_in_pause"] = any(first_end < t < end for t in audio)
        values["cut_in"] = values["spoke_in_pause"] or any(first_end < t < resumed for t in commits)
    values["heard"] = " | ".join(client.recording.texts("user-transcription"))
    transcripts = [e.t for e in client.recording.of("user-transcription") if e.t >= end - 0.05]
    values["transcript_delay"] = round(transcripts[0] - end, 3) if transcripts else None
    later = [t for t in commits if t >= end - 0.05]
    values["commit_delay"] = round(later[0] - end, 3) if later else None
    replies = [t for t in audio if t >= end]
    values["first_audio_delay"] = round(replies[0] - end, 3) if replies else None
    return values


# --------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace) -> list[Outcome]:
    outcomes: list[Outcome] = []
    wanted = set(args.only or SCENARIOS)

    async def record(scenario: str, clip: str, job: Callable[[], Awaitable[dict[str, Any]]]):
        if scenario not in wanted:
            return
        values = await job()
        outcomes.append(Outcome(scenario, clip, values))
        print(f"  {scenario:<13} {clip[:40]:<42} {values}", flush=True)

    for text in (*INTERRUPTIONS, *BACKCHANNELS, *QUESTIONS):
        synthesize_pcm16k(text)

    if wanted & {"barge_in", "backchannel", "echo", "barge_in_echo"}:
        talker = Server(
            ["--greeting", GREETING, "--log-level", args.log_level, *args.server_arg], "talk"
        )
        try:
            talker.wait_ready()
            url = talker.ws_url
            for _ in range(args.repeat):
                for clip in INTERRUPTIONS:
                    await record("barge_in", clip, lambda c=clip: overlap_call(url, c))
                for clip in BACKCHANNELS:
                    await record("backchannel", clip, lambda c=clip: overlap_call(url, c))
                for delay in ECHO_DELAYS:
                    echo = Echo(ECHO_GAIN_DB, delay)
                    await record(
                        "echo", f"{ECHO_GAIN_DB:.0f} dB {delay * 1000:.0f} ms",
                        lambda e=echo: overlap_call(url, "", echo=e),
                    )  # fmt: skip
                # Talking over the bot while its echo leaks back: must still interrupt.
                for clip in INTERRUPTIONS[:2]:
                    await record(
                        "barge_in_echo",
                        clip,
                        lambda c=clip: overlap_call(url, c, echo=Echo(ECHO_GAIN_DB, 0.1)),
                    )
        finally:
            talker.stop()

    if wanted & {"pause", "end_of_turn"}:
        listener = Server(
            ["--greeting", "", "--log-level", args.log_level, *args.server_arg], "listen"
        )
        try:
            listener.wait_ready()
            url = listener.ws_url
            pauses = [
                (b, a, list(hesitation(b, a, PAUSE_SECS, synthesize_pcm16k)))
                for b, a in PAUSE_CLIPS
            ]
            for _ in range(args.repeat):
                for before, after, parts in pauses:
                    await record(
                        "pause", f"{before} ... {after}", lambda p=parts: turn_call(url, p)
                    )
                for question in QUESTIONS:
                    pcm = synthesize_pcm16k(question)
                    await record("end_of_turn", question, lambda p=pcm: turn_call(url, [p]))
        finally:
            listener.stop()
    return outcomes


def _median(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms" if xs else "-"


def _range(xs: list[float]) -> str:
    return f"{min(xs) * 1000:.0f}-{max(xs) * 1000:.0f} ms" if xs else "-"


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    def of(scenario: str) -> list[dict[str, Any]]:
        return [o.values for o in outcomes if o.scenario == scenario]

    barge, back, echo, pause, eot = (
        of("barge_in"), of("backchannel"), of("echo"), of("pause"), of("end_of_turn")
    )  # fmt: skip
    barge_echo = of("barge_in_echo")
    stops = [v["stop_latency"] for v in barge if v.get("stop_latency") is not None]
    echo_stops = [v["stop_latency"] for v in barge_echo if v.get("stop_latency") is not None]
    gaps = [v["gap"] for v in back if not v["interrupted"]]
    transcripts = [v["transcript_delay"] for v in eot if v.get("transcript_delay") is not None]
    commits = [v["commit_delay"] for v in eot if v.get("commit_delay") is not None]
    first_audio = [v["first_audio_delay"] for v in eot if v.get("first_audio_delay") is not None]
    return {
        "barge_in_stop_latency_median": statistics.median(stops) if stops else None,
        "barge_in_stop_latency": stops,
        "barge_in_missed": sum(not v["interrupted"] for v in barge),
        "barge_in_total": len(barge),
        "backchannel_false_interruptions": sum(v["interrupted"] for v in back),
        "backchannel_total": len(back),
        "backchannel_gap": gaps,
        "echo_self_interruptions": sum(v["interrupted"] for v in echo),
        "echo_total": len(echo),
        "barge_in_under_echo_stop_latency": echo_stops,
        "barge_in_under_echo_missed": sum(not v["interrupted"] for v in barge_echo),
        "barge_in_under_echo_total": len(barge_echo),
        "pause_cut_ins": sum(bool(v.get("cut_in")) for v in pause),
        "pause_spoke_over": sum(bool(v.get("spoke_in_pause")) for v in pause),
        "pause_total": len(pause),
        "end_of_turn_transcript_delay": transcripts,
        "end_of_turn_commit_delay": commits,
        "end_of_turn_first_audio_delay": first_audio,
    }


def print_table(summary: dict[str, Any]) -> None:
    s = summary
    rows = [
        ("barge-in stop latency (median, range)",
         f"{_median(s['barge_in_stop_latency'])}  ({_range(s['barge_in_stop_latency'])})"),
        ("barge-ins that did not interrupt", f"{s['barge_in_missed']}/{s['barge_in_total']}"),
        ("false interruptions on backchannels",
         f"{s['backchannel_false_interruptions']}/{s['backchannel_total']}"),
        ("bot gap around a backchannel (median, range)",
         f"{_median(s['backchannel_gap'])}  ({_range(s['backchannel_gap'])})"),
        ("self-interruptions under echo (-20 dB, 50-150 ms)",
         f"{s['echo_self_interruptions']}/{s['echo_total']}"),
        ("barge-in under echo: missed, stop latency (median)",
         f"{s['barge_in_under_echo_missed']}/{s['barge_in_under_echo_total']}, "
         f"{_median(s['barge_in_under_echo_stop_latency'])}"),
        ("cut-ins during mid-sentence pauses (bot audio in the pause)",
         f"{s['pause_cut_ins']}/{s['pause_total']} ({s['pause_spoke_over']})"),
        ("end of speech -> transcript (median, range)",
         f"{_median(s['end_of_turn_transcript_delay'])}  "
         f"({_range(s['end_of_turn_transcript_delay'])})"),
        ("end of speech -> turn committed (median, range)",
         f"{_median(s['end_of_turn_commit_delay'])}  ({_range(s['end_of_turn_commit_delay'])})"),
        ("end of speech -> first bot audio (median)",
         _median(s["end_of_turn_first_audio_delay"])),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    print("\nTurn taking")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.turn_taking", description=__doc__)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every scenario")
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `ai-operator serve` option"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only these scenarios (repeatable)",
    )
    parser.add_argument(
        "--log-level", default="warning", help="server log level (logs go to bench/results/)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    outcomes = asyncio.run(run_all(args))
    summary = summarise(outcomes)
    print_table(summary)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"turn_taking-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["python -m bench.turn_taking", *(argv or sys.argv[1:])]),
                "server_args": args.server_arg,
                "summary": summary,
                "outcomes": [asdict(o) for o in outcomes],
                "secs": round(time.monotonic() - started, 1),
            },
            indent=2,
        )
    )
    print(f"\nraw numbers: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
