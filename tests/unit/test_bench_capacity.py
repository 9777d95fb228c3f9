"""The cloud benchmarks' arithmetic: overhead per turn, the capacity knee, level accounting."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from ai_operator.config import Settings
from bench.capacity import Caller, Level, Samples, capacity, measure_level, verdict
from bench.cloud_fakes import (
    CpuPlan,
    FakesConfig,
    Latencies,
    first_sentence_tokens,
    load_yields,
    process_cpu_secs,
)
from bench.cloud_overhead import turn_overhead, vad_stop_secs
from bench.timeline import TurnTiming

LAT = Latencies(stt=0.15, llm_first_token=0.3, llm_per_token=0.01, tts_first_audio=0.1)
REPLY = "Sure, here is a short answer. It has two sentences."


# --- overhead -------------------------------------------------------------------------


def test_the_first_sentence_is_complete_when_the_next_one_starts():
    # "Sure," " here" " is" " a" " short" " answer." | " It": six tokens after the first
    assert first_sentence_tokens(REPLY) == 6
    assert LAT.first_sentence_secs(REPLY) == pytest.approx(0.36)


def test_a_one_sentence_reply_is_complete_with_its_last_token():
    assert first_sentence_tokens("Paris is the capital.") == 3
    assert first_sentence_tokens("Yes.") == 0


def _turn(v2v: float | None, endpoint: float | None, stt: float | None = None) -> TurnTiming:
    stages = {"endpoint": endpoint, "stt": stt, "llm": 0.31, "tts": 0.103}
    return TurnTiming(question="q", voice_to_voice=v2v, stages=stages)


def test_overhead_is_what_is_left_after_endpointing_and_the_providers():
    # timeline's endpoint stage holds the Deepgram wait (no STT processing metric): 0.44 s
    row = turn_overhead(_turn(0.92, 0.44), LAT, REPLY, vad_stop_secs=0.2)
    assert row is not None
    assert row.endpointing == pytest.approx(0.29)  # 0.44 - 0.15 STT
    assert row.llm == pytest.approx(0.36)
    # 0.92 - 0.29 - (0.15 + 0.36 + 0.10)
    assert row.overhead == pytest.approx(0.02)
    assert row.beyond_stop == pytest.approx(0.09)
    assert row.strict_overhead == pytest.approx(0.11)
    assert (row.llm_ttfb_seen, row.tts_ttfb_seen) == (0.31, 0.103)


def test_an_stt_time_timeline_already_took_out_is_not_taken_twice():
    row = turn_overhead(_turn(0.92, 0.29, stt=0.15), LAT, REPLY, vad_stop_secs=0.2)
    assert row is not None and row.endpointing == pytest.approx(0.29)


def test_a_turn_without_an_answer_or_an_endpoint_is_not_split():
    assert turn_overhead(_turn(None, 0.44), LAT, REPLY, 0.2) is None
    assert turn_overhead(_turn(0.9, None), LAT, REPLY, 0.2) is None


def test_the_vad_stop_is_read_from_the_server_arguments():
    assert vad_stop_secs([]) == Settings().vad_stop_secs
    assert vad_stop_secs(["--vad-stop-secs=0.3"]) == 0.3
    assert vad_stop_secs(["--vad-stop-secs", "0.25", "--llm-max-tokens=9"]) == 0.25


def test_the_fakes_config_survives_the_trip_to_the_child_process():
    config = FakesConfig(latencies=LAT, phrases={"Hi there.": 0.62}, reply="Yes.", cpus=[1])
    assert FakesConfig.from_json(config.to_json()) == config


# --- capacity -------------------------------------------------------------------------


def _level(sessions: int, v2v: list[float], **kw: object) -> Level:
    return Level(sessions=sessions, v2v=v2v, **kw)  # type: ignore[arg-type]


def test_capacity_is_the_last_level_before_p95_rises_past_the_slack():
    levels = [
        _level(1, [0.90, 0.92, 0.95]),
        _level(10, [0.91, 0.96, 1.00]),
        _level(20, [0.95, 1.00, 1.04]),  # p95 1.036: +0.086
        _level(30, [1.00, 1.10, 1.20]),  # +0.24
        _level(40, [0.90, 0.91, 0.92]),  # passes again, but the knee was at 30
    ]
    assert capacity(levels).sessions == 20  # type: ignore[union-attr]
    assert capacity(levels, slack=0.3).sessions == 40  # type: ignore[union-attr]


def test_a_lost_turn_or_session_fails_a_level_whatever_its_latency():
    base = _level(1, [0.9])
    assert capacity([base, _level(10, [0.9], failed_turns=1)]).sessions == 1  # type: ignore[union-attr]
    assert capacity([base, _level(10, [0.9], session_errors=["1013"])]).sessions == 1  # type: ignore[union-attr]
    assert capacity([_level(1, [])]) is None


def test_the_verdict_says_when_the_highest_level_tried_still_passed():
    levels = [_level(1, [0.9]), _level(10, [0.95])]
    assert "max sessions within +100 ms p95: >= 10" in verdict(levels)
    levels.append(_level(20, [1.5]))
    assert "max sessions within +100 ms p95: 10;" in verdict(levels)


def test_memory_per_session_is_the_growth_over_idle_shared_out():
    level = _level(10, [0.9], server_peak_rss=300 * 2**20, idle_rss=200 * 2**20)
    assert level.memory_per_session == pytest.approx(10 * 2**20)


def _turn_at(v2v: float | None) -> TurnTiming:
    return TurnTiming(question="q", voice_to_voice=v2v)


def test_only_turns_asked_while_every_caller_was_talking_count():
    early, late = Caller(started=10.0), Caller(started=12.0)
    early.turns = [(10.0, _turn_at(0.5)), (13.0, _turn_at(0.9)), (31.0, _turn_at(0.7))]
    late.turns = [(12.0, _turn_at(1.0)), (20.0, _turn_at(None))]
    samples = Samples(rows=[(12.0, 1.0, 0.5, 100), (22.0, 6.0, 1.5, 300), (30.0, 9.0, 2.0, 200)])
    level = measure_level(2, [early, late], samples, stop_at=30.0, cut_off=0)
    assert sorted(level.v2v) == [0.9, 1.0]  # 0.5 was before the late caller; 0.7 after stop
    assert level.failed_turns == 1
    assert level.window_secs == pytest.approx(18.0)
    assert level.server_cpu_pct == pytest.approx(100 * 8.0 / 18.0)
    assert level.load_cpu_pct == pytest.approx(100 * 1.5 / 18.0)
    assert level.server_peak_rss == 300


def test_a_caller_that_never_asked_is_a_session_error():
    level = measure_level(2, [Caller(started=1.0), Caller()], Samples(), stop_at=5.0, cut_off=1)
    assert level.failed_turns == 1  # cut off at the drain limit
    assert any("never got to ask" in e for e in level.session_errors)
    assert not level.healthy(baseline_p95=1.0)


def test_callers_quiet_is_digital_silence_or_noise_at_the_asked_level():
    import numpy as np

    from ai_operator.audio import INPUT_FRAME_BYTES
    from bench.harness import quiet_frames

    assert quiet_frames(None) == [b"\0" * INPUT_FRAME_BYTES]
    frames = quiet_frames(-50)
    assert len(frames) == 50 and all(len(f) == INPUT_FRAME_BYTES for f in frames)
    peak = np.abs(np.frombuffer(b"".join(frames), "<i2")).max()
    assert 0.9 * 32767 * 10 ** (-50 / 20) < peak <= 32767 * 10 ** (-50 / 20)


def test_a_process_cpu_can_leave_out_its_children():
    """The load's CPU is this process's own: the server and the fakes are its children, and
    counting them made the load look like 116 % of a core when it used 23 %."""
    me = os.getpid()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while process_cpu_secs(child.pid) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        own, with_children = process_cpu_secs(me, children=False), process_cpu_secs(me)
        assert with_children - own >= 0.4  # the busy child (0.5 s) is counted only on request
    finally:
        child.communicate(b"")


def test_a_pinned_benchmark_gives_its_cores_back():
    """`make bench` runs turn-taking after the pinned cloud benchmarks: it must not start
    its server on the load's core alone."""
    cpus = sorted(os.sched_getaffinity(0))
    plan = CpuPlan(server=(cpus[0],), load=(cpus[-1],))
    with plan.pinned():
        assert os.sched_getaffinity(0) == {cpus[-1]}
    assert sorted(os.sched_getaffinity(0)) == cpus
    with pytest.raises(RuntimeError), plan.pinned():
        raise RuntimeError("a benchmark failed")
    assert sorted(os.sched_getaffinity(0)) == cpus


def test_a_load_sharing_the_servers_cores_yields_them():
    """`--no-pin`: every thread of the fakes' process and the callers' own thread run below
    the server for the run; the server, started before, keeps its priority."""
    two_threads = "import sys, threading\nthreading.Thread(target=sys.stdin.read).start()\n"
    child = subprocess.Popen([sys.executable, "-c", two_threads], stdin=subprocess.PIPE)
    seen: dict[str, object] = {}
    base = os.getpriority(os.PRIO_PROCESS, 0)
    nice = min(base + 3, 19)

    def callers() -> None:  # a thread of its own: niceness is per thread on Linux
        with load_yields(child.pid, nice):
            seen["callers"] = os.getpriority(os.PRIO_PROCESS, 0)
            seen["fakes"] = {
                os.getpriority(os.PRIO_PROCESS, int(tid))
                for tid in os.listdir(f"/proc/{child.pid}/task")
            }
        with load_yields(child.pid, 0):  # 0: nothing changes
            seen["after"] = os.getpriority(os.PRIO_PROCESS, 0)

    try:
        deadline = time.monotonic() + 20
        while len(os.listdir(f"/proc/{child.pid}/task")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        worker = threading.Thread(target=callers)
        worker.start()
        worker.join()
        assert seen["callers"] == nice and seen["fakes"] == {nice}
        assert seen["after"] in (base, nice)  # put back where allowed (root), else left
        assert os.getpriority(os.PRIO_PROCESS, 0) == base  # this thread: untouched
    finally:
        child.communicate(b"")
