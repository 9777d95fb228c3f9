"""Provider registry: maps the configured name of each stage to a factory.

A factory takes the settings and the process-wide resources (loaded local models, shared
HTTP clients) and returns a fresh Pipecat service for one session. Cloud families register
themselves from their own modules; optional SDKs are imported lazily so a local-only
install never needs them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ai_operator.config import Settings
from ai_operator.errors import MissingPackageError

Stage = Literal["stt", "llm", "tts"]
STAGES: tuple[Stage, ...] = ("stt", "llm", "tts")
Factory = Callable[[Settings, "Resources"], Any]


@dataclass
class Resources:
    """What the process loads once and every session shares."""

    local: Any = None  # providers.local_models.LocalModels, when the local stages are loaded
    turn: Any = None  # turn_models.TurnModels: shared Silero VAD and Smart Turn sessions
    history: Any = None  # history.HistoryStore, unless history is disabled
    metrics: Any = None  # metrics.Metrics for /metrics
    extra: dict[str, Any] = field(default_factory=dict)


# (stage, provider name) -> "module:function"; modules import only when selected.
_FACTORIES: dict[tuple[Stage, str], str] = {
    ("stt", "local"): "ai_operator.providers.factories:local_stt",
    ("llm", "local"): "ai_operator.providers.factories:local_llm",
    ("tts", "local"): "ai_operator.providers.factories:local_tts",
    ("stt", "deepgram"): "ai_operator.providers.cloud:deepgram_stt",
    ("llm", "openai"): "ai_operator.providers.cloud:openai_llm",
    ("tts", "cartesia"): "ai_operator.providers.cloud:cartesia_tts",
}


def register(stage: Stage, name: str, target: str) -> None:
    """Declare a provider: `target` is 'module:function' returning a service for a session."""
    _FACTORIES[(stage, name)] = target


def factory(stage: Stage, name: str) -> Factory:
    """The factory for `name` at `stage`; raises KeyError naming the known choices."""
    try:
        target = _FACTORIES[(stage, name)]
    except KeyError:
        known = sorted(n for s, n in _FACTORIES if s == stage)
        raise KeyError(f"unknown {stage} provider '{name}' (known: {', '.join(known)})") from None
    module_name, func = target.split(":")
    return getattr(importlib.import_module(module_name), func)  # type: ignore[no-any-return]


def import_providers(settings: Settings) -> None:
    """Import the modules of the configured providers' factories now rather than in the
    first session (a server does it before freezing its startup heap: heap.py), so a
    missing SDK stops the server at startup (MissingPackageError) instead of every call."""
    for stage in STAGES:
        name = getattr(settings, stage)
        try:
            factory(stage, name)
        except ImportError as exc:
            raise MissingPackageError(f"{stage} provider '{name}': {exc}") from exc


def runs_local_stage(settings: Settings) -> bool:
    """Whether any stage is served by a local model (not counting failover's standby)."""
    return any(getattr(settings, stage) == "local" for stage in STAGES)


def needs_local_models(settings: Settings) -> bool:
    """Local models load when any stage is local, or when failover may fall back to them."""
    return settings.failover or runs_local_stage(settings)


def describe(settings: Settings, resources: Resources) -> dict[Stage, str]:
    """One human line per stage for the startup banner: provider, model, voice."""
    local = resources.local
    lines: dict[Stage, str] = {}
    if settings.stt == "local":
        lines["stt"] = f"local faster-whisper ({local.whisper_path if local else '?'}, int8 CPU)"
    else:
        lines["stt"] = f"deepgram {settings.deepgram_model} ({settings.deepgram_base_url})"
    if settings.llm == "local":
        lines["llm"] = f"local llama.cpp ({local.gguf_path.name if local else '?'})"
    else:
        lines["llm"] = f"openai-compatible {settings.openai_model} ({settings.openai_base_url})"
    if settings.tts == "local":
        lines["tts"] = f"local Piper ({local.piper_path.stem if local else '?'})"
    else:
        lines["tts"] = (
            f"cartesia {settings.cartesia_model}, voice {settings.cartesia_voice} "
            f"({settings.cartesia_base_url})"
        )
    return lines
