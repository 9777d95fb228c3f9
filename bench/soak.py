"""Soak test: a long spoken conversation, many short ones back to back, another long one.

    .venv/bin/python -m bench.soak [--turns 24] [--sessions 30] [--server-arg=--llm-max-tokens=25]

Starts `ai-operator serve` in a subprocess, talks to it like a microphone, and reports what
a leak or a slow degradation would show: the server's resident memory, its asyncio task and
thread counts, and the latency from the end of each question to the bot's first audible
answer, with its drift from the first quarter of turns to the last.

Memory is read with no session open: after a warm-up, after the first long conversation,
after the short ones and after the second long conversation. The models are shared, so the
first long conversation grows their buffers (llama.cpp's KV cache and compute buffers are
touched as the context lengthens): that is the working set, not a leak. The leak check is
the growth from there to the end, across 30 more sessions and a whole second conversation
(target < 5 %). Writes bench/results/soak-<time>.json and prints a table. Self-contained:
it needs only the installed package, not the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ai_operator.client import VoiceClient
from ai_operator.speech import synthesize_pcm16k
from bench.harness import ours

RESULTS = Path(__file__).resolve().parent / "results"
QUESTIONS = [
    "What is the capital of France?",
    "How far away is the moon?",
    "Can you recommend a good book?",
    "What should I cook for dinner tonight?",
    "Why is the sky blue?",
    "Tell me a fun fact about octopuses.",
    "How do I make a cup of tea?",
    "What is the tallest mountain in the world?",
]
GROWTH_TARGET_PCT = 5.0
TURN_TIMEOUT_SECS = 90.0


@dataclass
class Sample:
    phase: str
    index: int
    latency_secs: float | None  # end of question -> first audible answer; None: no answer
    rss_bytes: int
    tasks: int
    threads: int
    errors: int


@dataclass
class Report:
    # Idle stats (no session open) at each checkpoint: "warm", "long-1", "short", "long-2".
    checkpoints: dict[str, dict[str, int]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)

    def rss(self, checkpoint: str) -> int:
        return self.checkpoints[checkpoint]["rss_bytes"]

    def growth_pct(self, start: str = "long-1", end: str = "long-2") -> float:
        return 100.0 * (self.rss(end) - self.rss(start)) / self.rss(start)

    def peak_rss(self) -> int:
        return max([s.rss_bytes for s in self.samples] + [self.rss("long-2")])

    def latencies(self, phase: str) -> list[float]:
        return [s.latency_secs for s in self.samples if s.phase == phase and s.latency_secs]

    def drift(self, phase: str) -> tuple[float, float] | None:
        """Median latency of the first and of the last quarter of `phase`'s turns."""
        values = self.latencies(phase)
        quarter = max(1, len(values) // 4)
        if len(values) < 2 * quarter or not values:
            return None
        return statistics.median(values[:quarter]), statistics.median(values[-quarter:])


class Server:
    """`ai-operator serve` (bench.harness launches it) plus the /healthz process stats."""

    def __init__(self, extra_args: list[str]) -> None:
        self._process = ours(["--greeting", "", *extra_args])
        self.port = self._process.port
        self.base_url = self._process.base_url
        self.ws_url = self._process.ws_url

    async def wait_ready(self) -> None:
        await asyncio.to_thread(self._process.wait_healthy)

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            body = (await http.get(f"{self.base_url}/healthz", timeout=10)).json()
        return {"sessions": body["sessions"], **body["process"]}

    async def idle_stats(self) -> dict[str, int]:
        """Stats once no session is left (sessions close asynchronously)."""
        deadline = time.monotonic() + 30
        stats = await self.stats()
        while stats["sessions"] and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            stats = await self.stats()
        return {k: stats[k] for k in ("rss_bytes", "tasks", "threads")}

    def stop(self) -> None:
        self._process.stop()


async def ask(client: VoiceClient, pcm: bytes, *, wait_until_done: bool) -> float | None:
    """Say one question; the latency to the first audible answer, or None if none came."""
    end = await client.stream(pcm)
    trailing = asyncio.create_task(client.silence(TURN_TIMEOUT_SECS))
    try:
        await client.wait_for(
            lambda r: r.first_audible_after(end) is not None, timeout=TURN_TIMEOUT_SECS
        )
        first = client.recording.first_audible_after(end)
        if wait_until_done:
            await client.wait_for(
                lambda r: any(e.t > end for e in r.of("bot-stopped-speaking")),
                timeout=TURN_TIMEOUT_SECS,
            )
    except TimeoutError:
        return None
    finally:
        trailing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trailing
    return None if first is None else first - end


async def sample(
    server: Server, phase: str, index: int, latency: float | None, errors: int
) -> Sample:
    stats = await server.stats()
    return Sample(
        phase, index, latency, stats["rss_bytes"], stats["tasks"], stats["threads"], errors
    )


async def long_conversation(
    server: Server, report: Report, phase: str, speech: list[bytes]
) -> None:
    turns = report.args["turns"]
    print(f"{phase}: {turns} turns in one session", flush=True)
    async with VoiceClient(server.ws_url) as client:
        await client.ready()
        for turn in range(turns):
            latency = await ask(client, speech[turn % len(speech)], wait_until_done=True)
            errors = len(client.recording.of("error"))
            report.samples.append(await sample(server, phase, turn, latency, errors))
            shown = "-" if latency is None else f"{latency * 1000:.0f} ms"
            print(f"  turn {turn + 1:3d}: {shown:>8}  errors so far {errors}", flush=True)
    report.checkpoints[phase] = await server.idle_stats()


async def short_conversations(server: Server, report: Report, speech: list[bytes]) -> None:
    sessions = report.args["sessions"]
    print(f"short: {sessions} sessions back to back", flush=True)
    for n in range(sessions):
        async with VoiceClient(server.ws_url) as client:
            await client.ready()
            latency = await ask(client, speech[n % len(speech)], wait_until_done=False)
            errors = len(client.recording.of("error"))
        report.samples.append(await sample(server, "short", n, latency, errors))
    report.checkpoints["short"] = await server.idle_stats()


async def soak(args: argparse.Namespace) -> Report:
    print("synthesising the questions...", flush=True)
    speech = [synthesize_pcm16k(q) for q in QUESTIONS]
    server = Server(args.server_arg)
    try:
        await server.wait_ready()
        print(f"server ready on port {server.port}; warming up", flush=True)
        for pcm in speech[:2]:  # lazily loaded parts (ONNX arenas, threads)
            async with VoiceClient(server.ws_url) as client:
                await client.ready()
                await ask(client, pcm, wait_until_done=True)
        report = Report(args=vars(args))
        report.checkpoints["warm"] = await server.idle_stats()
        await long_conversation(server, report, "long-1", speech)
        await short_conversations(server, report, speech)
        await long_conversation(server, report, "long-2", speech)
        return report
    finally:
        server.stop()


def print_table(report: Report) -> None:
    mib = 2**20
    warm = report.rss("warm")
    print(f"\n{'resident memory, no session':<32}{'MiB':>8}{'vs warm':>10}")
    for name, label in [
        ("warm", "after warm-up"),
        ("long-1", "after long conversation 1"),
        ("short", f"after {report.args['sessions']} short sessions"),
        ("long-2", "after long conversation 2"),
    ]:
        rss = report.rss(name)
        print(f"  {label:<30}{rss / mib:>8.1f}{100 * (rss - warm) / warm:>+9.1f}%")
    print(f"  {'peak (during a session)':<30}{report.peak_rss() / mib:>8.1f}")
    growth = report.growth_pct()
    verdict = "ok" if growth < GROWTH_TARGET_PCT else "OVER TARGET"
    print(f"  growth, long 1 -> long 2:     {growth:+.1f} %  ({verdict}: < {GROWTH_TARGET_PCT} %)")
    first, last = report.checkpoints["warm"], report.checkpoints["long-2"]
    print(
        f"  tasks / threads:              {first['tasks']} / {first['threads']}"
        f"  ->  {last['tasks']} / {last['threads']}"
    )
    print(f"\n{'latency to first audio':<28}{'median':>8}{'p90':>8}{'first q':>9}{'last q':>8}")
    for phase in ("long-1", "short", "long-2"):
        values = sorted(report.latencies(phase))
        missing = sum(1 for s in report.samples if s.phase == phase and not s.latency_secs)
        errors = max((s.errors for s in report.samples if s.phase == phase), default=0)
        if not values:
            print(f"  {phase:<26}{'no answers':>8}")
            continue
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        drift = report.drift(phase)
        first_q, last_q = drift if drift else (values[0], values[-1])
        notes = (f"  ({missing} unanswered)" if missing else "") + (
            f"  ({errors} errors)" if errors else ""
        )
        print(
            f"  {phase + f' ({len(values)} turns)':<26}{statistics.median(values) * 1000:>6.0f}ms"
            f"{p90 * 1000:>6.0f}ms{first_q * 1000:>7.0f}ms{last_q * 1000:>6.0f}ms{notes}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--turns", type=int, default=24, help="turns of the long conversation")
    parser.add_argument("--sessions", type=int, default=30, help="short conversations after it")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra `ai-operator serve` option, e.g. --server-arg=--llm-max-tokens=25",
    )
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args))
    print_table(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    data = asdict(report) | {
        "growth_pct_long1_to_long2": report.growth_pct(),
        "growth_pct_warm_to_long2": report.growth_pct("warm", "long-2"),
        "peak_rss_bytes": report.peak_rss(),
    }
    out.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {out}")
    return 0 if report.growth_pct() < GROWTH_TARGET_PCT else 1


if __name__ == "__main__":
    sys.exit(main())
