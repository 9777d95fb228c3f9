"""Factories for the local stages (see the registry in providers/__init__.py)."""

from __future__ import annotations

from typing import Any

from ai_operator.config import Settings
from ai_operator.providers import Resources


def _models(resources: Resources) -> Any:
    if resources.local is None:
        raise RuntimeError("local models are not loaded")
    return resources.local


def local_stt(settings: Settings, resources: Resources) -> Any:
    from ai_operator.providers.local import LocalWhisperSTTService

    return LocalWhisperSTTService(models=_models(resources), window=settings.whisper_window)


def local_llm(settings: Settings, resources: Resources) -> Any:
    from ai_operator.providers.local_llm import LlamaCppLLMService

    return LlamaCppLLMService(models=_models(resources), settings=settings)


def local_tts(settings: Settings, resources: Resources) -> Any:
    from ai_operator.providers.local import LocalPiperTTSService

    return LocalPiperTTSService(models=_models(resources))
