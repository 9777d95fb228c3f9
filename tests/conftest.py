"""Shared fixtures: a real server process on a free port, real local models."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / ".artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`ai-operator serve` in a subprocess; output goes to a log file under tests/.artifacts."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, name: str = "server"):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}-{self.port}.log"
        full_env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "AI_OPERATOR_HISTORY_PATH": str(ARTIFACTS / f"history-{self.port}.sqlite3"),
            **(env or {}),
        }
        self.history_path = Path(full_env["AI_OPERATOR_HISTORY_PATH"])
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ai_operator",
                "serve",
                "--port",
                str(self.port),
                "--env-file",
                "/dev/null",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def running_server(
    args: list[str], env: dict[str, str] | None = None, name: str = "server"
) -> Iterator[ServerProcess]:
    """A server process for the duration of the block."""
    server = ServerProcess(args, env=env, name=name)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """A test that runs the CLI in-process (`main([...])`) installs the server's stderr
    handler, on that test's captured stderr; left in place, every later log line fails on
    the closed stream ("--- Logging error ---")."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def live_server() -> Iterator[ServerProcess]:
    """The server on the local embedded default, shared by the tests that only talk to it."""
    with running_server([], name="local") as server:
        yield server


@pytest.fixture(scope="session")
def question_pcm() -> bytes:
    from ai_operator.speech import synthesize_pcm16k

    return synthesize_pcm16k("What is the capital of France?")
