from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from pipecat.frames.frames import EndWorkerFrame, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection

from ai_operator.tools import APOLOGY, TOOLS, Tool, ToolContext, _guard, attach_tools


class FakeLLM:
    def __init__(self) -> None:
        self.pushed: list[tuple[Any, FrameDirection]] = []
        self.functions: dict[str, Any] = {}

    async def push_frame(self, frame: Any, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        self.pushed.append((frame, direction))

    def register_function(self, name: str, handler: Any, **options: Any) -> None:
        self.functions[name] = handler


def call(name: str, arguments: dict[str, Any], ctx: ToolContext):
    llm = FakeLLM()
    results: list[tuple[Any, Any]] = []

    async def result_callback(result: Any, properties: Any = None) -> None:
        results.append((result, properties))

    params = SimpleNamespace(arguments=arguments, llm=llm, result_callback=result_callback)
    tool = next(t for t in TOOLS if t.name == name)
    return llm, results, _guard(tool, ctx)(params)


async def test_time_in_the_configured_zone():
    _, results, run = call("get_current_time", {}, ToolContext("c", timezone="Asia/Tokyo"))
    await run
    result, props = results[0]
    assert result["timezone"] == "Asia/Tokyo" and "+09:00" in result["iso"]
    assert props.run_llm is True


async def test_unknown_zone_falls_back_to_configured():
    _, results, run = call("get_current_time", {"timezone": "Mars/Olympus"}, ToolContext("c"))
    await run
    assert results[0][0]["timezone"] == "UTC"


async def test_take_message_is_saved():
    saved: list[tuple[str, str, str]] = []
    ctx = ToolContext("c", save_message=lambda *a: saved.append(a))
    _, results, run = call(
        "take_message", {"message": "Call Bob", "caller_name": "Ann", "callback_number": "555"}, ctx
    )
    await run
    assert saved == [("Call Bob", "Ann", "555")]
    assert results[0][0] == {"status": "message saved"}


async def test_end_call_says_goodbye_then_ends_upstream():
    ctx = ToolContext("c")
    llm, results, run = call("end_call", {"goodbye": "Bye now!"}, ctx)
    await run
    assert ctx.ended
    (speak, down), (end, up) = llm.pushed
    assert isinstance(speak, TTSSpeakFrame) and speak.text == "Bye now!"
    assert down is FrameDirection.DOWNSTREAM
    assert isinstance(end, EndWorkerFrame) and up is FrameDirection.UPSTREAM
    assert results[0][1].run_llm is False


@pytest.mark.parametrize("failure", ["raise", "hang"])
async def test_failing_tool_becomes_a_spoken_apology(failure):
    async def bad(ctx, args, params):
        if failure == "raise":
            raise RuntimeError("database down")
        await asyncio.Event().wait()

    tool = Tool("bad", "fails", {}, (), bad)
    llm = FakeLLM()
    results: list[Any] = []

    async def result_callback(result, properties=None):
        results.append((result, properties))

    params = SimpleNamespace(arguments={}, llm=llm, result_callback=result_callback)
    await asyncio.wait_for(_guard(tool, ToolContext("c", timeout_secs=0.2))(params), 5)
    assert [f.text for f, _ in llm.pushed] == [APOLOGY]
    assert "error" in results[0][0] and results[0][1].run_llm is False


def test_attach_tools_advertises_and_registers_every_tool():
    llm, context = FakeLLM(), LLMContext()
    attach_tools(llm, context, ToolContext("c"))
    names = {t.name for t in TOOLS}
    assert set(llm.functions) == names
    assert {f.name for f in context.tools.standard_tools} == names
