"""The cloud-provider fakes, scripted and in a process of their own, for the cloud benchmarks.

`bench.cloud_overhead` and `bench.capacity` run our server on Deepgram, OpenAI and Cartesia
stand-ins with fixed latencies and no local inference (tests/fakes, scripted mode), so what
is left of voice-to-voice is the server's own work. The fakes run in a child process
(`python -m bench.cloud_fakes`, configured by one JSON line on stdin, answering with their
URLs on stdout, exiting when stdin closes), so their CPU never shares the benchmark's
event loop or the server's, and can be pinned to other cores than the server's.

tests/fakes is test support, not an installed package: this module is the one place the
benchmarks put tests/ on sys.path to reach it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench import harness
from bench.harness import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from fakes.cartesia import FakeCartesia  # noqa: E402
from fakes.deepgram import FakeDeepgram  # noqa: E402
from fakes.openai import FakeOpenAI, Reply, tokens  # noqa: E402
from fakes.scripted import phrase_secs  # noqa: E402

# Two sentences, as the system prompt asks; Pipecat hands Cartesia the first one as soon
# as the word after it starts.
DEFAULT_REPLY = "Sure, here is a short answer. It has two sentences."
KEYS = {
    "DEEPGRAM_API_KEY": "bench-deepgram-key",
    "OPENAI_API_KEY": "bench-openai-key",
    "CARTESIA_API_KEY": "bench-cartesia-key",
}
START_TIMEOUT_SECS = 30.0
SENTENCE_END = (".", "?", "!")


@dataclass(frozen=True)
class Latencies:
    """What each fake provider waits, in seconds."""

    stt: float = 0.15  # Deepgram: Finalize -> final transcript
    llm_first_token: float = 0.30  # OpenAI: request -> first token
    llm_per_token: float = 0.01  # OpenAI: between tokens (100 tokens/s)
    tts_first_audio: float = 0.10  # Cartesia: text -> first audio

    def first_sentence_secs(self, reply: str) -> float:
        """Request -> the moment the server can hand the reply's first sentence to TTS."""
        return self.llm_first_token + first_sentence_tokens(reply) * self.llm_per_token


def first_sentence_tokens(reply: str) -> int:
    """Tokens after the first that the server must receive before the first sentence is
    complete: through the one that starts the next sentence (Pipecat's sentence aggregator
    confirms a sentence end by the text after it), or the last token of a one-sentence reply.
    """
    streamed = tokens(reply)
    for i, token in enumerate(streamed):
        if token.rstrip().endswith(SENTENCE_END) and i + 1 < len(streamed):
            return i + 1
    return len(streamed) - 1


@dataclass
class FakesConfig:
    """Everything the child process needs: sent to it as one JSON line."""

    latencies: Latencies = field(default_factory=Latencies)
    phrases: dict[str, float] = field(default_factory=dict)  # what the caller may say
    reply: str = DEFAULT_REPLY
    cpus: list[int] | None = None  # pin the child to these cores

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FakesConfig:
        raw = json.loads(text)
        return cls(
            latencies=Latencies(**raw["latencies"]),
            phrases=raw["phrases"],
            reply=raw["reply"],
            cpus=raw["cpus"],
        )


def phrases_of(clips: Sequence[Any]) -> dict[str, float]:
    """{text: speech length} of `bench.questions.Clip`s, for scripted Deepgram."""
    return {clip.text: phrase_secs(clip.pcm) for clip in clips}


# ----------------------------------------------------------------------------------------
# The parent's side
# ----------------------------------------------------------------------------------------


class CloudFakes:
    """The child process. `server_args()` and the `KEYS` in the server's environment point
    our server at it."""

    def __init__(self, config: FakesConfig) -> None:
        self.config = config
        self.urls: dict[str, str] = {}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.cloud_fakes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = START_TIMEOUT_SECS) -> None:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(self.config.to_json() + "\n")
        stdin.flush()
        line: list[str] = []  # read in a thread: a pipe's readline has no timeout
        reader = threading.Thread(target=lambda: line.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or not line[0]:
            raise RuntimeError(f"the fake providers did not start (exit {self.proc.poll()})")
        self.urls = json.loads(line[0])

    def server_args(self) -> list[str]:
        return [
            "--stt", "deepgram", "--llm", "openai", "--tts", "cartesia",
            "--deepgram-base-url", self.urls["deepgram"],
            "--openai-base-url", self.urls["openai"],
            "--cartesia-base-url", self.urls["cartesia"],
        ]  # fmt: skip

    def cpu_secs(self) -> float:
        return process_cpu_secs(self.proc.pid)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        harness.wait_or_kill(self.proc, timeout=10)


@contextlib.contextmanager
def running_fakes(config: FakesConfig) -> Iterator[CloudFakes]:
    fakes = CloudFakes(config)
    try:
        fakes.wait_ready()
        yield fakes
    finally:
        fakes.stop()


@dataclass(frozen=True)
class CpuPlan:
    """Which cores the server gets, and which the load (fakes and callers) gets.

    Split: the server alone on the first core, the load on the rest, so the load's CPU
    cannot slow the server down (nor the server's the load's clock). Not split: everything
    shares every core, as on a machine where the server is alone but with the load added.
    """

    server: tuple[int, ...] = ()
    load: tuple[int, ...] = ()

    @classmethod
    def choose(cls, split: bool) -> CpuPlan:
        cpus = sorted(os.sched_getaffinity(0))
        if not split or len(cpus) < 2:
            return cls()
        return cls(server=(cpus[0],), load=tuple(cpus[1:]))

    def describe(self) -> str:
        total = len(os.sched_getaffinity(0))
        if not self.server:
            return f"not pinned: server, fake providers and callers share all {total} cores"
        return (
            f"server pinned to CPU {_cpus(self.server)}; fake providers (own process) and "
            f"callers (this process) pinned to CPU {_cpus(self.load)}"
        )

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """This process (callers) on the load's cores for the block, then back where it
        was: a benchmark run after this one must not inherit the pin."""
        before = os.sched_getaffinity(0)
        if self.load:
            os.sched_setaffinity(0, set(self.load))
        try:
            yield
        finally:
            os.sched_setaffinity(0, before)


@contextlib.contextmanager
def load_yields(fakes_pid: int, nice: int) -> Iterator[None]:
    """The fake providers' threads and this thread (the callers' event loop) at `nice` for
    the block, so that where the load shares the server's cores the server's threads get
    them first, as on a machine of its own; 0 leaves every priority as it is.

    The fakes' process ends after the run; this thread's priority is put back on the way
    out where the system allows (only root may lower a nice value again)."""
    if nice <= 0:
        yield
        return
    before = os.getpriority(os.PRIO_PROCESS, 0)
    for tid in os.listdir(f"/proc/{fakes_pid}/task"):
        os.setpriority(os.PRIO_PROCESS, int(tid), nice)
    os.setpriority(os.PRIO_PROCESS, 0, nice)  # Linux: the calling thread alone
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def _cpus(cpus: Sequence[int]) -> str:
    return ",".join(str(c) for c in cpus)


def start_server(
    fakes: CloudFakes, plan: CpuPlan, history: Path, extra_args: Sequence[str] = ()
) -> ServerProcess:
    """`ai-operator serve` on the fakes with failover off (a slow turn must not fall back to
    local inference), pinned as planned; returns once it is healthy."""
    os.environ.update(KEYS)  # the server inherits the keys, as a user's shell passes them
    server = harness.ours(
        [*fakes.server_args(), "--no-failover", "--history-path", str(history), *extra_args]
    )
    try:
        if plan.server:
            pin(server.proc.pid, plan.server)
        server.wait_healthy()
        if plan.server:
            pin(server.proc.pid, plan.server)
    except BaseException:
        server.stop()
        raise
    return server


# ----------------------------------------------------------------------------------------
# Process accounting and pinning (Linux /proc; zeros elsewhere)
# ----------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and its child processes (the server's `--workers`)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *(int(c) for c in children)]


def process_cpu_secs(pid: int, *, children: bool = True) -> float:
    """User + system CPU seconds used so far by process `pid` (and, with `children`, its
    child processes), all threads."""
    total = 0.0
    for one in process_tree(pid) if children else [pid]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def process_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its children (pages they share are counted per process)."""
    total = 0
    for one in process_tree(pid):
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def pin(pid: int, cpus: Sequence[int]) -> None:
    """Pin every thread of `pid` (threads started later inherit it) to `cpus`."""
    tasks = Path(f"/proc/{pid}/task")
    ids = [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [pid]
    for tid in ids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, set(cpus))


# ----------------------------------------------------------------------------------------
# The child's side
# ----------------------------------------------------------------------------------------


def serve(config: FakesConfig) -> None:
    if config.cpus:
        os.sched_setaffinity(0, set(config.cpus))
    lat = config.latencies
    deepgram = FakeDeepgram(KEYS["DEEPGRAM_API_KEY"], scripted=True)
    deepgram.latency_secs = lat.stt
    deepgram.phrases = dict(config.phrases)
    openai = FakeOpenAI(KEYS["OPENAI_API_KEY"])
    openai.latency_secs = lat.llm_first_token
    openai.token_delay_secs = lat.llm_per_token
    reply = config.reply
    openai.responder = lambda _body: Reply(text=reply)
    cartesia = FakeCartesia(KEYS["CARTESIA_API_KEY"], scripted=True)
    cartesia.latency_secs = lat.tts_first_audio
    for fake in (deepgram, openai, cartesia):
        # They stand in for providers elsewhere, yet share this machine's cores with the
        # server: uvloop's loop takes them less of it per message than asyncio's own.
        fake.loop_factory = uvloop.new_event_loop
    fakes = (deepgram.start(), openai.start(), cartesia.start())
    urls = {"deepgram": deepgram.base_url, "openai": openai.base_url, "cartesia": cartesia.base_url}
    print(json.dumps(urls), flush=True)
    try:
        sys.stdin.read()  # until the parent closes it (or dies)
    finally:
        for fake in fakes:
            fake.stop()


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m bench.cloud_fakes",
        description="Scripted cloud fakes for the benchmarks: a JSON config line on stdin, "
        "their URLs as a JSON line on stdout; runs until stdin closes.",
    ).parse_args(argv)
    serve(FakesConfig.from_json(sys.stdin.readline()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
