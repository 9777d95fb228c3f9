"""The operator's tools, declared in one place: tell the time, end the call, take a message.

Each tool is a `Tool`: a name, a description and JSON-schema parameters the LLM sees, and an
async handler. `attach_tools()` puts their schemas into the conversation context and
registers guarded handlers on the LLM service: a handler that raises or runs past its
timeout becomes a short spoken apology instead of a hung turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import EndWorkerFrame, FunctionCallResultProperties, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams

logger = logging.getLogger(__name__)

TOOL_TIMEOUT_SECS = 5.0
APOLOGY = "Sorry, I couldn't do that just now."
GOODBYE = "Thank you for calling. Goodbye!"


@dataclass
class ToolContext:
    """What the handlers may touch for one conversation."""

    conversation_id: str
    timezone: str = "UTC"
    # Called with (body, caller_name, callback) to store a message with the transcript.
    save_message: Callable[[str, str, str], None] | None = None
    timeout_secs: float = TOOL_TIMEOUT_SECS
    ended: bool = False
    messages: list[dict[str, str]] = field(default_factory=list)


Handler = Callable[[ToolContext, dict[str, Any], FunctionCallParams], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    properties: dict[str, Any]
    required: tuple[str, ...]
    handler: Handler
    # False: the handler speaks for itself; the LLM is not asked to answer the result.
    run_llm: bool = True

    def schema(self) -> FunctionSchema:
        return FunctionSchema(
            name=self.name,
            description=self.description,
            properties=self.properties,
            required=list(self.required),
        )


async def get_time(ctx: ToolContext, args: dict[str, Any], _: FunctionCallParams) -> dict[str, Any]:
    """The current date and time in the configured (or requested) time zone."""
    zone_name = str(args.get("timezone") or ctx.timezone)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone_name, zone = ctx.timezone, ZoneInfo(ctx.timezone)
    now = datetime.now(zone)
    return {
        "timezone": zone_name,
        "date": now.strftime("%A %d %B %Y"),
        "time": now.strftime("%H:%M"),
        "iso": now.isoformat(timespec="seconds"),
    }


async def end_call(
    ctx: ToolContext, args: dict[str, Any], params: FunctionCallParams
) -> dict[str, Any]:
    """Say goodbye, then end the conversation once the goodbye has been spoken."""
    goodbye = str(args.get("goodbye") or GOODBYE)
    ctx.ended = True
    await params.llm.push_frame(TTSSpeakFrame(goodbye))
    # EndWorkerFrame ends the pipeline gracefully: queued speech plays out first, then the
    # transport closes the socket (for a phone call, that hangs up).
    await params.llm.push_frame(EndWorkerFrame(), FrameDirection.UPSTREAM)
    return {"status": "call ended", "said": goodbye}


async def take_message(
    ctx: ToolContext, args: dict[str, Any], _: FunctionCallParams
) -> dict[str, Any]:
    """Store a message for a person, with the transcript of this conversation."""
    body = str(args.get("message", "")).strip()
    if not body:
        raise ValueError("take_message needs a non-empty message")
    caller = str(args.get("caller_name", "")).strip()
    callback = str(args.get("callback_number", "")).strip()
    ctx.messages.append({"message": body, "caller_name": caller, "callback_number": callback})
    if ctx.save_message is not None:
        ctx.save_message(body, caller, callback)
    return {"status": "message saved"}


TOOLS: tuple[Tool, ...] = (
    Tool(
        name="get_current_time",
        description="Get the current date and time. Use it whenever asked about the time or date.",
        properties={
            "timezone": {
                "type": "string",
                "description": "IANA time zone such as Europe/London; omit for the local zone.",
            }
        },
        required=(),
        handler=get_time,
    ),
    Tool(
        name="end_call",
        description="End the call politely when the caller says goodbye or asks to hang up.",
        properties={
            "goodbye": {
                "type": "string",
                "description": "A short goodbye to say before hanging up.",
            }
        },
        required=(),
        handler=end_call,
        run_llm=False,
    ),
    Tool(
        name="take_message",
        description="Take a message for someone who is not available.",
        properties={
            "message": {"type": "string", "description": "The message, in the caller's words."},
            "caller_name": {"type": "string", "description": "Who the message is from."},
            "callback_number": {"type": "string", "description": "Number to call back, if given."},
        },
        required=("message",),
        handler=take_message,
    ),
)


def tools_schema(tools: tuple[Tool, ...] = TOOLS) -> ToolsSchema:
    return ToolsSchema(standard_tools=[t.schema() for t in tools])


def _guard(tool: Tool, ctx: ToolContext) -> Callable[[FunctionCallParams], Awaitable[None]]:
    async def run(params: FunctionCallParams) -> None:
        try:
            async with asyncio.timeout(ctx.timeout_secs):
                result = await tool.handler(ctx, dict(params.arguments), params)
        except Exception as exc:  # noqa: BLE001 - any tool failure becomes an apology
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            logger.warning(
                "tool %s failed: %s", tool.name, reason, extra={"session": ctx.conversation_id}
            )
            await params.llm.push_frame(TTSSpeakFrame(APOLOGY))
            await params.result_callback(
                {"error": f"{tool.name} failed: {reason}"},
                properties=FunctionCallResultProperties(run_llm=False),
            )
            return
        await params.result_callback(
            result, properties=FunctionCallResultProperties(run_llm=tool.run_llm)
        )

    return run


def attach_tools(
    llm: Any, context: LLMContext, ctx: ToolContext, tools: tuple[Tool, ...] = TOOLS
) -> None:
    """Advertise `tools` in `context` and register their guarded handlers on `llm`."""
    context.set_tools(tools_schema(tools))
    for tool in tools:
        llm.register_function(tool.name, _guard(tool, ctx))
