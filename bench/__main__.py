"""`python -m bench` (`make bench`): voice-to-voice latency, barge-in, startup; ours vs reference.

Systems run one after the other, never at once: each gets the whole machine. Results go to
bench/results/<timestamp>.json; medians are checked against bench/baseline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import harness, reference, report
from bench.questions import INTERRUPTION, LONG_ANSWER_PROMPT, QUESTIONS, Clip, make_clips
from bench.timeline import TurnTiming

ROOT = harness.ROOT
DEFAULT_BASELINE = ROOT / "bench" / "baseline.json"
DEFAULT_PLOT = ROOT / "docs" / "bench-latency.png"
SYSTEMS = ("ours", "reference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Measure our server against Pipecat's standard wiring with the same local models: "
            "voice-to-voice latency per turn (with a per-stage breakdown), barge-in stop "
            "latency and startup time. Prints tables, writes bench/results/<time>.json, "
            "checks medians against bench/baseline.json and plots docs/bench-latency.png."
        ),
    )
    parser.add_argument(
        "--turns",
        type=int,
        default=len(QUESTIONS),
        help=f"questions per session, 1-{len(QUESTIONS)} [default: {len(QUESTIONS)}]",
    )
    parser.add_argument("--only", choices=SYSTEMS, help="measure one system only")
    parser.add_argument("--skip-barge-in", action="store_true", help="no barge-in trials")
    parser.add_argument(
        "--barge-in-trials", type=int, default=3, help="interruptions per system [default: 3]"
    )
    parser.add_argument(
        "--startup-runs",
        type=int,
        default=3,
        help="times our server is started to time startup to ready [default: 3]",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `ai-operator serve` argument (repeatable), e.g. --server-arg=--tts-threads=1",
    )
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE)
    parser.add_argument(
        "--save-baseline", action="store_true", help="write this run's summary as the baseline"
    )
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="PNG to write")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument(
        "--cloud-overhead",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then run bench.cloud_overhead (our overhead on fake cloud providers, ~1 min)",
    )
    parser.add_argument(
        "--turn-taking",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then run bench.turn_taking --repeat 1 (barge-in, backchannels, echo, pauses, "
        "end-of-turn delay on our server, ~4 min)",
    )
    parser.add_argument(
        "--capacity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then run bench.capacity (sessions per core on fake cloud providers, ~8 min)",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="keep every received message (audio as RMS) in the JSON, to dig into a number",
    )
    return parser


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "pipecat": metadata.version("pipecat-ai"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return head + ("+dirty" if dirty else "")


def print_turn(system: str) -> Callable[[TurnTiming], None]:
    def show(turn: TurnTiming) -> None:
        v2v = report.fmt_secs(turn.voice_to_voice)
        print(
            f"  [{system}] {v2v} s  {turn.question!r} -> heard {turn.transcript!r}, "
            f"first phrase {turn.first_phrase!r}",
            flush=True,
        )

    return show


def measure_startup(runs: int, server_args: list[str]) -> dict[str, Any]:
    """Start our server `runs` times: spawn -> /healthz 200, and its own "ready in" figure."""
    healthy, reported = [], []
    for _ in range(runs):
        server = harness.ours(server_args)
        with harness.running(server):
            healthy.append(server.start_to_healthy)
        reported.append(harness.reported_ready_secs(server.log_path.read_text()))
    return {"start_to_healthy": healthy, "reported_ready": reported}


def run_system(
    system: str, args: argparse.Namespace, questions: list[Clip], barge: tuple[Clip, Clip]
) -> dict[str, Any]:
    """Launch one system, hold one scripted session against it, stop it."""
    trials = 0 if args.skip_barge_in else args.barge_in_trials
    started = time.monotonic()
    if system == "ours":
        servers = [harness.ours(args.server_arg)]
    else:
        llm = reference.launch_llm_server()
        servers = [llm, reference.launch_reference(f"{llm.base_url}/v1")]
    try:
        for server in servers:
            server.wait_healthy()
        startup = time.monotonic() - started
        print(f"[{system}] up in {startup:.2f} s; logs: {servers[-1].log_path}", flush=True)
        ws_url = servers[-1].ws_url
        session = asyncio.run(
            harness.converse(
                ws_url, questions, on_turn=print_turn(system), keep_timeline=args.timeline
            )
        )
        barge_ins = [
            asyncio.run(harness.interrupt(ws_url, *barge, keep_timeline=args.timeline))
            for _ in range(trials)
        ]
    finally:
        for server in servers:
            server.stop()
    for s in (session, *barge_ins):
        if s.error:
            print(f"[{system}] a session ended early: {s.error}", flush=True)
    return {"startup_to_healthy": startup, "session": session, "barge_in_sessions": barge_ins}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.turns <= len(QUESTIONS):
        print(f"--turns must be 1-{len(QUESTIONS)}", file=sys.stderr)
        return 2
    systems = [args.only] if args.only else list(SYSTEMS)
    info = machine()
    print(
        f"machine: {info['cpus']} x {info['cpu_model']}; load average "
        f"{info['loadavg_at_start'][0]:.2f} (numbers are noisy when it is near the core count)",
        flush=True,
    )
    print("synthesizing the caller's questions...", flush=True)
    questions = make_clips(QUESTIONS[: args.turns])
    barge = tuple(make_clips([LONG_ANSWER_PROMPT, INTERRUPTION]))
    assert len(barge) == 2

    startup: dict[str, Any] = {}
    if "ours" in systems and args.startup_runs > 0:
        print(f"[ours] timing startup x{args.startup_runs}...", flush=True)
        startup = measure_startup(args.startup_runs, args.server_arg)

    measured = {s: run_system(s, args, questions, barge) for s in systems}  # type: ignore[arg-type]
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    code = finish(args, info, systems, measured, startup)
    # Imported only when asked for: they put tests/ on sys.path to reach the fakes.
    if args.cloud_overhead:
        from bench import cloud_overhead

        code = cloud_overhead.main([]) or code
    if args.turn_taking:
        from bench import turn_taking

        code = turn_taking.main(["--repeat", "1"]) or code
    if args.capacity:
        from bench import capacity

        code = capacity.main([]) or code
    return code


def finish(
    args: argparse.Namespace,
    info: dict[str, Any],
    systems: list[str],
    measured: dict[str, dict[str, Any]],
    startup: dict[str, Any],
) -> int:
    turns = {s: measured[s]["session"].turns for s in systems}
    barge_ins = {
        s: [b for bs in measured[s]["barge_in_sessions"] for b in bs.barge_ins] for s in systems
    }
    summary: dict[str, float | None] = {}
    for s in systems:
        boot = report.median(startup.get("start_to_healthy", [])) if s == "ours" else None
        summary.update(report.summarize_system(s, turns[s], barge_ins[s], boot))
    summary = {k: None if v is None else round(v, 4) for k, v in summary.items()}

    for s in systems:
        session = measured[s]["session"]
        print(f"\n## {s}: per turn (seconds)\n")
        print(report.turns_table(session.turns))
        print(
            f"\nconnect -> bot-ready {report.fmt_secs(session.connect_to_bot_ready)} s, "
            f"connect -> greeting audio {report.fmt_secs(session.connect_to_greeting_audio)} s"
        )
        for i, b in enumerate(barge_ins[s], 1):
            print(
                f"barge-in {i}: bot audio stopped {report.fmt_secs(b.stop_latency)} s after the "
                f"caller began (interruption message {report.fmt_secs(b.interruption_latency)} s)"
                + (f" [{b.error}]" if b.error else "")
            )
    print("\n## voice-to-voice: reference vs ours\n")
    print(report.comparison_table(turns.get("reference"), turns.get("ours")))
    print("\n## per-stage medians\n")
    print(report.stage_table(summary, systems))
    if startup:
        healthy = ", ".join(f"{v:.2f}" for v in startup["start_to_healthy"])
        said = ", ".join(report.fmt_secs(v) for v in startup["reported_ready"])
        print(f"\nstartup (ours): spawn -> /healthz OK {healthy} s; server says ready in {said} s")
    for s in systems:
        key = f"{s}.barge_in_stop.median"
        if key in summary:
            print(f"barge-in stop ({s}, median): {report.fmt_secs(summary[key])} s")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results = {
        "timestamp": stamp,
        "git_commit": git_commit(),
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary,
        "startup": startup,
        "systems": {
            s: {
                "startup_to_healthy": measured[s]["startup_to_healthy"],
                "conversation": measured[s]["session"].to_dict(),
                "barge_in_sessions": [bs.to_dict() for bs in measured[s]["barge_in_sessions"]],
            }
            for s in systems
        },
    }
    baseline = report.load_baseline(args.baseline)
    baseline_cpu = report.baseline_cpu(args.baseline)
    same_machine = baseline_cpu in (None, info["cpu_model"])
    found = report.regressions(summary, baseline, same_machine=same_machine)
    results["regressions"] = found
    path = report.write_json(harness.RESULTS_DIR / f"{stamp}.json", results)
    print(f"\nresults: {path.relative_to(ROOT)}")
    if not baseline:
        print(f"no baseline at {args.baseline}: nothing to compare against")
    elif not same_machine:
        print(
            f"the baseline was measured on another CPU ({baseline_cpu}; this one: "
            f"{info['cpu_model']}): only the ours / reference ratio is compared"
        )
    for line in found:
        print(f"\n!!!!!!!! {line} !!!!!!!!", flush=True)
    if baseline and not found:
        print(f"no regression against {args.baseline.name} (tolerance 20 % on medians)")
    if args.save_baseline:
        keep = ("timestamp", "git_commit", "machine", "summary")
        report.write_json(args.baseline, {k: results[k] for k in keep})
        print(f"baseline written: {args.baseline}")
    if not args.no_plot:
        plot = report.plot_latencies(args.plot, turns, summary)
        print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
