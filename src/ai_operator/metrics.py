"""Prometheus metrics for /metrics. One registry per app (no process-global state).

With several worker processes (workers.py) prometheus_client keeps the values in files
that every worker writes, and `render()` sums them: any worker answers for all.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# Voice-to-voice buckets (seconds): fine around the 0.5-1.5 s region that matters.
LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)


class Metrics:
    """The server's metrics; `render()` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_sessions = Gauge(
            "aiop_active_sessions",
            "Conversations in progress",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.sessions = Counter("aiop_sessions", "Conversations started", ["transport"], registry=r)
        self.turns = Counter("aiop_turns", "Finished turns", ["speaker"], registry=r)
        self.voice_to_voice = Histogram(
            "aiop_voice_to_voice_seconds",
            "End of user speech to first bot audio, measured in the server",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_ttfb = Histogram(
            "aiop_stage_ttfb_seconds",
            "Time to first byte per pipeline stage",
            ["stage", "provider"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.interruptions = Counter(
            "aiop_interruptions", "Bot turns cut short by the user", registry=r
        )
        self.errors = Counter(
            "aiop_errors", "Errors reported in sessions", ["stage", "provider"], registry=r
        )
        self.failovers = Counter(
            "aiop_failovers",
            "Cloud stages that fell back to local",
            ["stage", "provider"],
            registry=r,
        )
        self.rejected_messages = Counter(
            "aiop_rejected_messages",
            "Client messages rejected by the protocol guard",
            ["kind"],
            registry=r,
        )

    def render(self) -> bytes:
        shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not shared:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker, path=shared)
        return generate_latest(every_worker)
