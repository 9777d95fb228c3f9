"""`--workers 2`: two server processes on one port, with one session limit and one /metrics."""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest
from tests.integration.conftest import healthz, running_server, wait_until
from tests.integration.test_history_and_metrics import metric

from ai_operator.client import VoiceClient
from fakes.harness import greeted

MAX_SESSIONS = 4


@pytest.fixture(scope="module")
def server():
    args = ["--workers", "2", "--max-sessions", str(MAX_SESSIONS)]
    with running_server(args, name="workers") as server:
        yield server


def metrics(server) -> str:
    return httpx.get(f"{server.base_url}/metrics", timeout=10).text


async def test_both_workers_start(server):
    # /healthz answers once the first worker is up; the second may still be loading.
    await wait_until(lambda: "worker 1 ready in" in server.log(), timeout=60)
    assert "2 worker processes on port" in server.log()


async def test_sessions_are_counted_across_workers(server):
    clients = [VoiceClient(server.ws_url) for _ in range(MAX_SESSIONS + 1)]
    try:
        for client in clients[:MAX_SESSIONS]:
            await client.__aenter__()
        # Real conversations: each one greets, whichever worker took it.
        await asyncio.gather(*(greeted(c) for c in clients[:MAX_SESSIONS]))
        await wait_until(lambda: healthz(server)["sessions"] == MAX_SESSIONS, timeout=10)
        assert metric(metrics(server), "aiop_active_sessions") == MAX_SESSIONS
        extra = clients[MAX_SESSIONS]
        await extra.__aenter__()
        await asyncio.wait_for(extra.closed.wait(), timeout=10)
        assert extra.close_code == 1013  # the limit counts both workers' sessions
    finally:
        for client in clients:
            await client.close()
    await wait_until(lambda: healthz(server)["sessions"] == 0, timeout=15)
    # Every worker's count, whichever worker answers the scrape.
    for _ in range(4):
        text = metrics(server)
        assert metric(text, "aiop_sessions_total") == MAX_SESSIONS
        assert metric(text, "aiop_active_sessions") == 0


async def test_sessions_are_spread_over_the_workers(server):
    """Each new call goes to a worker with the fewest: left to the kernel, the busier one
    took most of them."""
    await wait_until(lambda: min(healthz(server)["worker_sessions"]) == 0, timeout=60)
    clients: list[VoiceClient] = []
    try:
        for count in range(1, MAX_SESSIONS + 1):
            clients.append(VoiceClient(server.ws_url))
            await clients[-1].__aenter__()
            await wait_until(lambda n=count: healthz(server)["sessions"] == n, timeout=10)
            loads = healthz(server)["worker_sessions"]
            assert max(loads) - min(loads) == count % 2, loads
        await clients[0].close()  # worker A now has one call fewer: the next one goes there
        await wait_until(lambda: healthz(server)["sessions"] == MAX_SESSIONS - 1, timeout=10)
        clients.append(VoiceClient(server.ws_url))
        await clients[-1].__aenter__()
        await wait_until(lambda: healthz(server)["sessions"] == MAX_SESSIONS, timeout=10)
        assert healthz(server)["worker_sessions"] == [MAX_SESSIONS // 2] * 2
    finally:
        for client in clients:
            await client.close()
    await wait_until(lambda: healthz(server)["worker_sessions"] == [0, 0], timeout=15)


def test_stopping_the_server_stops_every_worker(server):
    server.stop()  # SIGTERM to the parent, as a supervisor would send
    log = server.log_path.read_text()
    assert server.proc.returncode == 0, log
    assert "failed" not in log and "exited with" not in log
    leftover = subprocess.run(
        ["pgrep", "-f", "--", f"--port {server.port} "], capture_output=True, text=True
    )
    assert leftover.returncode == 1, f"a worker outlived the server: {leftover.stdout}"
