"""`python -m bench.cloud_overhead`: what our server adds to a cloud turn beyond its providers.

    .venv/bin/python -m bench.cloud_overhead [--turns 5] [--stt-ms 150] [--llm-ms 300]
        [--token-ms 10] [--tts-ms 100] [--no-pin]

Our server runs on scripted Deepgram, OpenAI and Cartesia fakes (bench.cloud_fakes: fixed
latencies, no inference, a process of their own) and one scripted caller asks a few
questions. Per turn (seconds; stages as bench/timeline.py defines them):

    voice-to-voice  the caller's last speech sample sent -> first audible bot audio received
    endpointing     timeline's `endpoint` stage: end of speech -> user-stopped-speaking, minus
                    the STT time inside it. With Deepgram that STT time is the fake's fixed
                    latency (Pipecat sends Finalize when the VAD reports the stop; the turn
                    ends when the final transcript is back), so endpointing is the VAD's stop
                    (`--vad-stop-secs` of silence, 0.2 s, plus the model's own reaction) and
                    Smart Turn's verdict where it outlasts the STT wait.
    providers       on the critical path: STT (Finalize -> transcript) + LLM (request -> the
                    token that completes the first sentence, which Pipecat needs before it
                    speaks: first token + n more at the token rate) + TTS (text -> first audio)
    overhead        voice-to-voice - endpointing - providers: queues, frame handling, HTTP
                    and WebSocket hops, audio pacing; the issue's target is <= 40 ms.

Endpointing is measured, not assumed: the part of it beyond the configured silence is shown
separately ("beyond stop" = endpointing - vad stop secs: Silero's own reaction, measured
offline at 40-120 ms on these clips, or Smart Turn holding a turn it judged unfinished), with
`strict overhead` = overhead + beyond stop, for a reader who counts only the configured
silence as endpointing. Writes bench/results/cloud_overhead-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ai_operator.config import Settings
from bench import harness, report
from bench.cloud_fakes import (
    DEFAULT_REPLY,
    CpuPlan,
    FakesConfig,
    Latencies,
    phrases_of,
    running_fakes,
    start_server,
)
from bench.questions import QUESTIONS, make_clips
from bench.timeline import TurnTiming

TARGET_OVERHEAD_SECS = 0.040
DEFAULT_VAD_STOP_SECS = Settings.model_fields["vad_stop_secs"].default  # the server's


@dataclass
class TurnOverhead:
    """One turn, split into what the providers and the endpointing take and the rest."""

    question: str
    voice_to_voice: float
    endpointing: float
    stt: float
    llm: float  # to the first complete sentence
    tts: float
    overhead: float
    beyond_stop: float  # endpointing beyond the configured VAD stop silence
    strict_overhead: float
    llm_ttfb_seen: float | None  # the server's own measurement of the provider
    tts_ttfb_seen: float | None


def turn_overhead(
    turn: TurnTiming, latencies: Latencies, reply: str, vad_stop_secs: float
) -> TurnOverhead | None:
    """Split one measured turn; None when it has no voice-to-voice or no endpoint."""
    endpoint = turn.stages.get("endpoint")
    if turn.voice_to_voice is None or endpoint is None:
        return None
    # timeline subtracts the STT processor's `processing` metric, which Deepgram's service
    # does not report: then the STT wait inside the endpoint stage is the fake's latency.
    if turn.stages.get("stt") is None:
        endpoint = max(0.0, endpoint - latencies.stt)
    llm = latencies.first_sentence_secs(reply)
    providers = latencies.stt + llm + latencies.tts_first_audio
    overhead = turn.voice_to_voice - endpoint - providers
    beyond_stop = endpoint - vad_stop_secs
    return TurnOverhead(
        question=turn.question,
        voice_to_voice=turn.voice_to_voice,
        endpointing=endpoint,
        stt=latencies.stt,
        llm=llm,
        tts=latencies.tts_first_audio,
        overhead=overhead,
        beyond_stop=beyond_stop,
        strict_overhead=overhead + beyond_stop,
        llm_ttfb_seen=turn.stages.get("llm"),
        tts_ttfb_seen=turn.stages.get("tts"),
    )


def summary(rows: Sequence[TurnOverhead]) -> dict[str, float | None]:
    def stat(values: list[float], fn: Any) -> float | None:
        return fn(values) if values else None

    out: dict[str, float | None] = {}
    for name in ("voice_to_voice", "endpointing", "overhead", "beyond_stop", "strict_overhead"):
        values = [getattr(r, name) for r in rows]
        out[f"{name}.median"] = stat(values, statistics.median)
        out[f"{name}.max"] = stat(values, max)
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def table(rows: Sequence[TurnOverhead]) -> str:
    head = (
        "| question | v2v | endpointing | stt | llm (1st sentence) | tts | **overhead** "
        "| beyond stop | strict overhead | llm ttfb seen | tts ttfb seen |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r.question} | {_ms(r.voice_to_voice)} | {_ms(r.endpointing)} | {_ms(r.stt)} "
            f"| {_ms(r.llm)} | {_ms(r.tts)} | **{_ms(r.overhead)}** | {_ms(r.beyond_stop)} "
            f"| {_ms(r.strict_overhead)} | {_ms(r.llm_ttfb_seen)} | {_ms(r.tts_ttfb_seen)} |"
        )
    return "\n".join(lines) + "\n(milliseconds)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cloud_overhead", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--turns", type=int, default=5, help=f"questions, 1-{len(QUESTIONS)} [default: 5]"
    )
    parser.add_argument("--stt-ms", type=float, default=150, help="Deepgram latency [150]")
    parser.add_argument("--llm-ms", type=float, default=300, help="OpenAI first token [300]")
    parser.add_argument("--token-ms", type=float, default=10, help="OpenAI per token [10]")
    parser.add_argument("--tts-ms", type=float, default=100, help="Cartesia first audio [100]")
    parser.add_argument("--reply", default=DEFAULT_REPLY, help="what the LLM fake answers")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the server share every core with the load"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `ai-operator serve` argument (repeatable)",
    )
    return parser


def latencies_from(args: argparse.Namespace) -> Latencies:
    return Latencies(
        stt=args.stt_ms / 1000,
        llm_first_token=args.llm_ms / 1000,
        llm_per_token=args.token_ms / 1000,
        tts_first_audio=args.tts_ms / 1000,
    )


def vad_stop_secs(server_args: Sequence[str]) -> float:
    """The --vad-stop-secs the server runs with (the last one given wins)."""
    value = DEFAULT_VAD_STOP_SECS
    for i, arg in enumerate(server_args):
        if arg.startswith("--vad-stop-secs="):
            value = float(arg.split("=", 1)[1])
        elif arg == "--vad-stop-secs" and i + 1 < len(server_args):
            value = float(server_args[i + 1])
    return value


def measure(args: argparse.Namespace) -> dict[str, Any]:
    plan = CpuPlan.choose(split=not args.no_pin)
    print(f"cores: {plan.describe()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print("synthesizing the caller's questions...", flush=True)
    clips = make_clips(QUESTIONS[: args.turns])
    latencies = latencies_from(args)
    config = FakesConfig(
        latencies=latencies, phrases=phrases_of(clips), reply=args.reply, cpus=list(plan.load)
    )
    with plan.pinned(), tempfile.TemporaryDirectory() as tmp, running_fakes(config) as fakes:
        server = start_server(fakes, plan, Path(tmp) / "history.sqlite3", args.server_arg)
        try:
            session = asyncio.run(harness.converse(server.ws_url, clips))
        finally:
            server.stop()
    if session.error:
        print(f"the session ended early: {session.error}", flush=True)
    stop = vad_stop_secs(args.server_arg)
    rows = [r for t in session.turns if (r := turn_overhead(t, latencies, args.reply, stop))]
    return {
        "cores": plan.describe(),
        "loadavg_at_end": os.getloadavg()[0],
        "latencies": asdict(latencies),
        "reply": args.reply,
        "vad_stop_secs": stop,
        "turns": [asdict(r) for r in rows],
        "unmeasured": [t.to_dict() for t in session.turns if t.voice_to_voice is None],
        "summary": summary(rows),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.turns <= len(QUESTIONS):
        print(f"--turns must be 1-{len(QUESTIONS)}", file=sys.stderr)
        return 2
    result = measure(args)
    rows: list[TurnOverhead] = result.pop("rows")
    lat = result["latencies"]
    print(
        f"\nproviders: STT {lat['stt'] * 1000:.0f} ms, LLM first token "
        f"{lat['llm_first_token'] * 1000:.0f} ms + {lat['llm_per_token'] * 1000:.0f} ms/token, "
        f"TTS first audio {lat['tts_first_audio'] * 1000:.0f} ms; "
        f"VAD stop {result['vad_stop_secs'] * 1000:.0f} ms\n"
    )
    print(table(rows))
    s = result["summary"]
    if not rows:
        print("\nno turn was measured")
        return 1
    verdict = "meets" if (s["overhead.median"] or 0) <= TARGET_OVERHEAD_SECS else "MISSES"
    print(
        f"\noverhead: median {_ms(s['overhead.median'])} ms, max {_ms(s['overhead.max'])} ms "
        f"-> {verdict} the {TARGET_OVERHEAD_SECS * 1000:.0f} ms target (median)"
    )
    print(
        f"strict overhead (endpointing beyond the VAD stop counted too): median "
        f"{_ms(s['strict_overhead.median'])} ms, max {_ms(s['strict_overhead.max'])} ms; "
        f"beyond stop median {_ms(s['beyond_stop.median'])} ms"
    )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = report.write_json(harness.RESULTS_DIR / f"cloud_overhead-{stamp}.json", result)
    print(f"results: {path.relative_to(harness.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
