"""`python -m bench.capacity`: how many conversations one server holds on cloud providers.

    .venv/bin/python -m bench.capacity [--levels 1,2,4,6,8,10,15,20,25,30,40,50,60,80,100]
        [--window 20] [--no-pin] [--load-nice 10] [--mic-noise-dbfs -50] [--server-arg=...]

Our server runs on the scripted cloud fakes (bench.cloud_fakes: fixed latencies, no local
inference, their own process), and the load is ramped: at each level N, N scripted callers
connect (spread over `--ramp` seconds), hear the greeting and then ask questions one after
the other (a 0.8 s pause, a question, the whole answer; each caller starts at a different
question of `CALLER_LINES`) until the level's window ends. Each caller's microphone sends a
20 ms frame every 20 ms throughout, as a real one does.

Counted: turns *asked* between the moment the last caller of the level started talking and
the end of the window, so every counted turn ran with all N conversations open. Per level:
voice-to-voice p50/p95 of those turns, failed turns (no answer), the server's CPU (100 % =
one core) and the load's (fakes + callers) over the window, the server's peak resident
memory, and memory per session = (peak RSS - idle RSS after warm-up) / N. The ramp stops at
the first level whose p95 is more than `--slack-ms` (100) above the 1-session p95, or which
lost a turn or a session; the answer is the last level before it.

By default the server is pinned to one core and the load to the other (see CpuPlan), so
the callers' and fakes' CPU cannot slow the server; the server is one Python process, so
one core is what its event loop can use anyway. With `--no-pin` (the whole machine, with
`--server-arg=--workers=2`) the load shares every core with the server and runs at nice
`--load-nice` (10), below it, so that it takes what the server leaves, as it would on
machines of its own; the caller lag column shows what that costs the callers' clocks.
Writes bench/results/capacity-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

from ai_operator.client import VoiceClient
from bench import harness, report
from bench.cloud_fakes import (
    CloudFakes,
    CpuPlan,
    FakesConfig,
    load_yields,
    phrases_of,
    process_cpu_secs,
    process_rss_bytes,
    running_fakes,
    start_server,
)
from bench.harness import Microphone, ServerProcess, SessionResult
from bench.questions import QUESTIONS, Clip, make_clips
from bench.timeline import TurnTiming

# Fine steps at the bottom: a slower machine bends at a few sessions per core, and the ramp
# stops at the first level past the knee.
DEFAULT_LEVELS = (1, 2, 4, 6, 8, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100)
# Questions only: Smart Turn holds "Tell me a fun fact about octopuses." ~0.55 s longer (it
# judges the statement unfinished) whatever the load, and that turn would set the p95.
CALLER_LINES = tuple(q for q in QUESTIONS if q.endswith("?"))
SLACK_SECS = 0.100
# Where the load shares the server's cores (--no-pin): its priority below the server's, as
# the event loops' Smart Turn threads have (turn_models.SMART_TURN_NICE).
LOAD_NICE = 10
# Every level is judged against the first one's p95, so it gets ~28 turns: each of the
# nine caller lines about three times. The lines' endpoints differ by up to 50 ms whatever
# the load ("How many legs does a spider have?" is slow), and with 14 turns (90 s) five
# lines came twice and four once: single baselines read 923-964 ms, where 108 such turns
# pooled read 942 ms. With ~7 turns the p95 was the slowest turn, and one slow reply moved
# the verdict by a level.
BASELINE_WINDOW_SECS = 180.0
# After the last caller connects: time for its greeting before turns are counted.
SETTLE_SECS = 5.0
# A level's callers finish the turn they are in after the window; longer is a failure.
DRAIN_SECS = 20.0
SAMPLE_EVERY_SECS = 0.5
MIB = 2**20


@dataclass
class Level:
    """One load level's measurements."""

    sessions: int
    v2v: list[float] = field(default_factory=list)  # counted turns, seconds
    failed_turns: int = 0  # counted turns with no answer, or cut off at the drain limit
    session_errors: list[str] = field(default_factory=list)
    window_secs: float = 0.0
    server_cpu_pct: float = 0.0  # 100 = one core
    load_cpu_pct: float = 0.0  # the fakes' process and the callers' (this one)
    server_peak_rss: int = 0
    idle_rss: int = 0
    caller_lag_p95: float = 0.0  # how late the callers' event loop woke up
    stages: list[dict[str, float | None]] = field(default_factory=list)  # per counted turn
    # Per counted turn: what was asked, and when (seconds into the window), to tell a
    # slow question from a slow moment.
    questions: list[str] = field(default_factory=list)
    asked_at: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        return report.percentile(self.v2v, 50)

    @property
    def p95(self) -> float | None:
        return report.percentile(self.v2v, 95)

    @property
    def memory_per_session(self) -> float:
        return max(0, self.server_peak_rss - self.idle_rss) / self.sessions

    def healthy(self, baseline_p95: float, slack: float = SLACK_SECS) -> bool:
        """Every counted turn answered, no session lost, p95 within `slack` of baseline."""
        p95 = self.p95
        return (
            p95 is not None
            and not self.failed_turns
            and not self.session_errors
            and p95 <= baseline_p95 + slack
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "p50": self.p50,
            "p95": self.p95,
            "memory_per_session": self.memory_per_session,
        }


def capacity(levels: Sequence[Level], slack: float = SLACK_SECS) -> Level | None:
    """The busiest level before the first unhealthy one; the first level is the baseline.

    Levels after a failure do not count even if they pass: a knee is where it first bends.
    """
    if not levels or levels[0].p95 is None:
        return None
    baseline = levels[0].p95
    best = None
    for level in levels:
        if not level.healthy(baseline, slack):
            break
        best = level
    return best


# ----------------------------------------------------------------------------------------
# Driving one level
# ----------------------------------------------------------------------------------------


@dataclass
class Caller:
    """What one scripted caller did: when it started asking, and each turn with its time."""

    started: float | None = None
    turns: list[tuple[float, TurnTiming]] = field(default_factory=list)
    error: str | None = None


async def call(
    ws_url: str,
    clips: Sequence[Clip],
    caller: Caller,
    first: int,
    stop_at: float,
    noise_dbfs: float | None = None,
) -> None:
    """Greet, then ask question after question until `stop_at`."""

    async def script(client: VoiceClient, mic: Microphone, result: SessionResult) -> None:
        caller.started = time.monotonic()
        k = first
        while time.monotonic() < stop_at:
            asked = time.monotonic()
            turn = await harness.ask(client, mic, clips[k % len(clips)])
            caller.turns.append((asked, turn))
            k += 1

    result = await harness.scripted_session(ws_url, script, noise_dbfs=noise_dbfs)
    caller.error = result.error


@dataclass
class Samples:
    """Cumulative CPU seconds and RSS sampled over time: (t, server, load, rss)."""

    rows: list[tuple[float, float, float, int]] = field(default_factory=list)
    lags: list[tuple[float, float]] = field(default_factory=list)  # (t, loop wake-up lag)

    def between(self, start: float, end: float) -> tuple[float, float, int, float]:
        """Server CPU %, load CPU %, peak server RSS, caller lag p95 within [start, end]."""
        inside = [r for r in self.rows if start <= r[0] <= end] or self.rows[-1:]
        if not inside:
            return 0.0, 0.0, 0, 0.0
        first, last = inside[0], inside[-1]
        span = last[0] - first[0]
        server = 100 * (last[1] - first[1]) / span if span > 0 else 0.0
        load = 100 * (last[2] - first[2]) / span if span > 0 else 0.0
        peak = max(r[3] for r in inside)
        lag = report.percentile([g for t, g in self.lags if start <= t <= end], 95) or 0.0
        return server, load, peak, lag


async def sample(server_pid: int, fakes: CloudFakes, samples: Samples) -> None:
    """Every SAMPLE_EVERY_SECS: the processes' CPU and RSS, and this loop's wake-up lag."""
    me = os.getpid()
    while True:
        now = time.monotonic()
        # This process's own CPU only: the server and the fakes are its children.
        load = fakes.cpu_secs() + process_cpu_secs(me, children=False)
        samples.rows.append(
            (now, process_cpu_secs(server_pid), load, process_rss_bytes(server_pid))
        )
        await asyncio.sleep(SAMPLE_EVERY_SECS)
        samples.lags.append((time.monotonic(), time.monotonic() - now - SAMPLE_EVERY_SECS))


async def run_level(
    server: ServerProcess,
    fakes: CloudFakes,
    clips: Sequence[Clip],
    sessions: int,
    *,
    ramp_secs: float,
    window_secs: float,
    noise_dbfs: float | None = None,
) -> Level:
    """N callers, spread over `ramp_secs`, talking until the window closes; then measure."""
    t0 = time.monotonic()
    stop_at = t0 + ramp_secs + SETTLE_SECS + window_secs
    callers = [Caller() for _ in range(sessions)]
    samples = Samples()
    sampler = asyncio.create_task(sample(server.proc.pid, fakes, samples))

    async def start(i: int) -> None:
        await asyncio.sleep(i * ramp_secs / sessions)
        await call(server.ws_url, clips, callers[i], i, stop_at, noise_dbfs)

    tasks = [asyncio.create_task(start(i)) for i in range(sessions)]
    _, pending = await asyncio.wait(tasks, timeout=stop_at + DRAIN_SECS - time.monotonic())
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    return measure_level(sessions, callers, samples, stop_at, cut_off=len(pending))


def measure_level(
    sessions: int, callers: Sequence[Caller], samples: Samples, stop_at: float, cut_off: int
) -> Level:
    level = Level(sessions=sessions, failed_turns=cut_off)
    starts = [c.started for c in callers]
    level.session_errors = [c.error for c in callers if c.error]
    if any(s is None for s in starts):
        level.session_errors.append(f"{starts.count(None)} caller(s) never got to ask")
        steady = stop_at
    else:
        steady = max(s for s in starts if s is not None)
    for caller in callers:
        for asked, turn in caller.turns:
            if steady <= asked < stop_at:
                if turn.voice_to_voice is None:
                    level.failed_turns += 1
                else:
                    level.v2v.append(turn.voice_to_voice)
                    level.stages.append(turn.stages)
                    level.questions.append(turn.question)
                    level.asked_at.append(round(asked - steady, 3))
    level.window_secs = max(0.0, stop_at - steady)
    cpu, load, peak, lag = samples.between(steady, stop_at)
    level.server_cpu_pct, level.load_cpu_pct = cpu, load
    level.server_peak_rss, level.caller_lag_p95 = peak, lag
    return level


async def idle(server: ServerProcess, within_secs: float = 30.0) -> None:
    """Wait until the server reports no open session (they close asynchronously)."""
    deadline = time.monotonic() + within_secs
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                body = (await http.get(f"{server.base_url}/healthz", timeout=5)).json()
                if not body.get("sessions"):
                    return
            await asyncio.sleep(0.5)


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def table(levels: Sequence[Level]) -> str:
    base = levels[0].p95 if levels else None
    lines = [
        "| sessions | turns | failed | p50 ms | p95 ms | p95 vs 1 | server CPU % "
        "| load CPU % | server RSS MiB | MiB/session | caller lag p95 ms |",
        "|" + "---|" * 11,
    ]
    for lv in levels:
        delta = "-" if lv.p95 is None or base is None else f"{(lv.p95 - base) * 1000:+.0f}"
        failed = lv.failed_turns + len(lv.session_errors)
        lines.append(
            f"| {lv.sessions} | {len(lv.v2v)} | {failed} | {_ms(lv.p50)} | {_ms(lv.p95)} "
            f"| {delta} | {lv.server_cpu_pct:.0f} | {lv.load_cpu_pct:.0f} "
            f"| {lv.server_peak_rss / MIB:.0f} | {lv.memory_per_session / MIB:.1f} "
            f"| {_ms(lv.caller_lag_p95)} |"
        )
    return "\n".join(lines)


def verdict(levels: Sequence[Level], slack: float = SLACK_SECS) -> str:
    best = capacity(levels, slack)
    if best is None:
        return "no answer: the 1-session level measured no turn"
    last = levels[-1]
    capped = best is last and last.healthy(levels[0].p95 or 0.0, slack)
    prefix = ">= " if capped else ""
    note = " (the highest level tried: raise --levels)" if capped else ""
    return (
        f"max sessions within +{slack * 1000:.0f} ms p95: {prefix}{best.sessions}{note}; "
        f"p95 {_ms(best.p95)} ms vs {_ms(levels[0].p95)} ms with 1 session, "
        f"{best.memory_per_session / MIB:.1f} MiB per session"
    )


# ----------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--levels",
        default=",".join(map(str, DEFAULT_LEVELS)),
        help="concurrent sessions per level, the first one the baseline [%(default)s]",
    )
    parser.add_argument("--window", type=float, default=20.0, help="seconds counted per level")
    parser.add_argument(
        "--baseline-window",
        type=float,
        default=BASELINE_WINDOW_SECS,
        help="seconds counted at the first level",
    )
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds to connect a level")
    parser.add_argument("--slack-ms", type=float, default=SLACK_SECS * 1000)
    parser.add_argument(
        "--no-pin", action="store_true", help="let the server share every core with the load"
    )
    parser.add_argument(
        "--load-nice",
        type=int,
        default=LOAD_NICE,
        metavar="N",
        help="with --no-pin, run the callers and fake providers at this nice value, below the "
        "server (0 = the same priority) [%(default)s]",
    )
    parser.add_argument(
        "--mic-noise-dbfs",
        type=float,
        default=None,
        metavar="DBFS",
        help="callers send white noise peaking at this level between lines, as a microphone "
        "without noise suppression does [default: digital silence]",
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], metavar="ARG", help="extra serve argument"
    )
    return parser


async def ramp(
    args: argparse.Namespace, server: ServerProcess, fakes: CloudFakes, clips: Sequence[Clip]
) -> tuple[list[Level], int]:
    await harness.converse(server.ws_url, clips[:1])  # warm-up: connections, lazy imports
    await idle(server)
    idle_rss = process_rss_bytes(server.proc.pid)
    levels: list[Level] = []
    for i, n in enumerate(int(x) for x in args.levels.split(",")):
        window = args.baseline_window if i == 0 else args.window
        print(f"level {n}: {n} session(s), {window:.0f} s window...", flush=True)
        level = await run_level(
            server,
            fakes,
            clips,
            n,
            ramp_secs=args.ramp if n > 1 else 0.0,
            window_secs=window,
            noise_dbfs=args.mic_noise_dbfs,
        )
        level.idle_rss = idle_rss
        levels.append(level)
        print(table(levels).splitlines()[-1], flush=True)
        await idle(server)
        if levels[0].p95 is None or not level.healthy(levels[0].p95, args.slack_ms / 1000):
            break
    return levels, idle_rss


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    top = max(int(x) for x in args.levels.split(","))
    plan = CpuPlan.choose(split=not args.no_pin)
    load_before = os.getloadavg()[0]
    print(f"cores: {plan.describe()}; load average {load_before:.2f}", flush=True)
    print("synthesizing the caller's questions...", flush=True)
    clips = make_clips(CALLER_LINES)
    config = FakesConfig(phrases=phrases_of(clips), cpus=list(plan.load))
    with plan.pinned(), tempfile.TemporaryDirectory() as tmp, running_fakes(config) as fakes:
        extra = ["--max-sessions", str(top + 10), *args.server_arg]
        server = start_server(fakes, plan, Path(tmp) / "history.sqlite3", extra)
        # Sharing the server's cores, the load yields them to it (`--load-nice`); pinned,
        # it has its own core.
        nice = 0 if plan.server else args.load_nice
        try:
            with load_yields(fakes.proc.pid, nice):
                # The callers on uvloop's loop: they share the cores with the server, and
                # take less of them than on asyncio's own loop.
                levels, idle_rss = uvloop.run(ramp(args, server, fakes, clips))
        finally:
            server.stop()
    print("\n" + table(levels))
    if nice:
        print(f"callers and fake providers ran at nice {nice}, below the server")
    load = (load_before, os.getloadavg()[0])
    print(f"\nidle server RSS after warm-up: {idle_rss / MIB:.0f} MiB; {plan.describe()}")
    print(f"load average before / after: {load[0]:.2f} / {load[1]:.2f} (1 min)")
    slack = args.slack_ms / 1000
    print(verdict(levels, slack))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    result = {
        "timestamp": stamp,
        "cores": plan.describe(),
        "loadavg_before_after": load,
        "latencies": asdict(config.latencies),
        "args": vars(args),
        "idle_rss": idle_rss,
        "levels": [lv.to_dict() for lv in levels],
        "verdict": verdict(levels, slack),
    }
    path = report.write_json(harness.RESULTS_DIR / f"capacity-{stamp}.json", result)
    print(f"results: {path.relative_to(harness.ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
