"""TESTS ONLY: make a stage fail on purpose, to prove a session survives it.

Off unless the `fault_inject` setting (env AI_OPERATOR_FAULT_INJECT) is set; the server
logs a warning at startup when it is. The spec is a comma-separated list of
`stage:mode[:times]`:

    llm:raise        every LLM call raises a ProviderError
    tts:stall:1      the first TTS call of each session never answers (until cancelled)
    stt:empty        every transcription comes back with nothing

Modes work on any service with the usual Pipecat entry points: `run_stt` (STT),
`get_chat_completions` (OpenAI-style LLMs, which includes the local llama.cpp one) and
`run_tts` (TTS). This module is the only place the setting is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from ai_operator.errors import ProviderError
from ai_operator.providers import STAGES

Mode = Literal["raise", "stall", "empty"]
MODES = ("raise", "stall", "empty")
# The method each stage's fault wraps.
ENTRY_POINTS = {"stt": "run_stt", "llm": "get_chat_completions", "tts": "run_tts"}


@dataclass(frozen=True)
class Fault:
    stage: str
    mode: Mode
    times: int | None = None  # None: every call


def parse_faults(spec: str) -> list[Fault]:
    """Parse the setting; raises ValueError naming the variable on a bad spec."""
    faults: list[Fault] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        stage, _, rest = item.partition(":")
        mode, _, times = rest.partition(":")
        if stage not in STAGES or mode not in MODES or (times and not times.isdigit()):
            raise ValueError(
                f"invalid AI_OPERATOR_FAULT_INJECT entry '{item}': expected "
                "stage:mode[:times] with stage stt|llm|tts and mode raise|stall|empty"
            )
        faults.append(Fault(stage, cast(Mode, mode), int(times) if times else None))
    return faults


class _Trigger:
    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self._left = fault.times

    def due(self) -> bool:
        if self._left is None:
            return True
        if self._left <= 0:
            return False
        self._left -= 1
        return True

    def error(self) -> ProviderError:
        stage = self.fault.stage
        return ProviderError(stage, "fault-inject", "injected fault", retryable=True)


async def _forever() -> None:
    await asyncio.Event().wait()


async def _no_chunks(stall: bool) -> AsyncGenerator[Any, None]:
    if stall:
        await _forever()
    return
    yield  # an async generator that yields nothing


def _faulty_generator(original: Callable[..., Any], trigger: _Trigger) -> Callable[..., Any]:
    async def wrapped(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        if trigger.due():
            if trigger.fault.mode == "raise":
                raise trigger.error()
            if trigger.fault.mode == "stall":
                await _forever()
            return
        async for item in original(*args, **kwargs):
            yield item

    return wrapped


def _faulty_llm(original: Callable[..., Any], trigger: _Trigger) -> Callable[..., Any]:
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        if trigger.due():
            if trigger.fault.mode == "raise":
                raise trigger.error()
            return _no_chunks(stall=trigger.fault.mode == "stall")
        return await original(*args, **kwargs)

    return wrapped


def inject_faults(services: Any, faults: list[Fault]) -> None:
    """Wrap the entry point of each faulted stage of one session's services.

    Faults on one stage apply in the order listed: "llm:empty:1,llm:raise:1" empties the
    first call and fails the second.
    """
    for fault in reversed(faults):
        service = getattr(services, fault.stage)
        name = ENTRY_POINTS[fault.stage]
        original = getattr(service, name, None)
        if original is None:
            raise ValueError(f"{type(service).__name__} has no {name}(): cannot inject {fault}")
        wrap = _faulty_llm if fault.stage == "llm" else _faulty_generator
        setattr(service, name, wrap(original, _Trigger(fault)))
