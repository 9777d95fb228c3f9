"""A fake OpenAI chat-completions server: `POST /v1/chat/completions`, streamed or not.

Streaming replies are Server-Sent Events, one `data: {chat.completion.chunk}` line per token
and a final `data: [DONE]`, exactly as OpenAI sends them (including the usage chunk when
`stream_options.include_usage` is set, and tool calls streamed as `delta.tool_calls` with the
arguments in fragments). Auth is `Authorization: Bearer <key>`.

By default the reply is derived from the last user message, so a test can check that the
words it spoke reached the LLM and the answer reached the speaker:

    "The cloud model heard: what is the capital of France?"

Queue scripted replies with `fake.script.append(Reply(text=...))` or
`Reply(tool_calls=[ToolCall("get_time", {"zone": "UTC"})])`. A request with the same
messages as the one before gets the same scripted reply, as from a deterministic model: the
server asks again when an answer it started before the end of the turn was withdrawn (one
that wanted a tool call is always withdrawn and asked for again).

Timing: the first token goes out `latency_secs` after the request, then one token every
`token_delay_secs`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from fakes import HTTP_FAULTS, FakeServer, Fault, request_id

CLOUD_REPLY_PREFIX = "The cloud model heard:"

_ERRORS = {
    401: (
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "invalid_request_error",
        "invalid_api_key",
    ),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", None),
}


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: "call_" + request_id().replace("-", "")[:24])


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def echo_reply(body: dict[str, Any]) -> Reply:
    heard = last_user_text(body.get("messages", [])).strip()
    return Reply(text=f"{CLOUD_REPLY_PREFIX} {heard}")


def tokens(text: str) -> list[str]:
    """Split like a tokenizer would stream it: words with their leading space."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class FakeOpenAI(FakeServer):
    name = "fake-openai"

    def __init__(self, api_key: str = "test-openai-key") -> None:
        super().__init__(api_key)
        self.script: list[Reply] = []
        self.responder: Callable[[dict[str, Any]], Reply] = echo_reply
        self.token_delay_secs = 0.0
        self.replies: list[str] = []  # the text of every reply sent, in order
        self._last_scripted: tuple[str, Reply] | None = None  # (messages, reply)

    @property
    def base_url(self) -> str:
        """What a user would set as --openai-base-url."""
        return f"{self.http_url}/v1"

    def forget(self) -> None:
        self.script.clear()
        self._last_scripted = None
        self.replies.clear()
        self.token_delay_secs = 0.0
        self.responder = echo_reply

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._completions)]

    def _error(self, status: int) -> web.Response:
        message, kind, code = _ERRORS.get(status, ("error", "server_error", None))
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return web.json_response(body, status=status)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        seen = self.new_request(request)
        fault = self.fault
        if fault in HTTP_FAULTS:
            seen.outcome = str(HTTP_FAULTS[fault])
            return self._error(HTTP_FAULTS[fault])
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            seen.outcome = "401"
            return self._error(401)
        try:
            body = await request.json()
        except ValueError:
            seen.outcome = "400"
            return web.json_response({"error": {"message": "invalid JSON body"}}, status=400)
        seen.messages.append(body)
        self.touch()
        if fault is Fault.STALL:
            seen.outcome = "stall"
            await self.stall(request)
            return web.Response(status=499)  # nobody is listening any more
        await self.delay()
        reply = self._scripted(body) or self.responder(body)
        self.replies.append(reply.text)
        self.touch()
        if not body.get("stream"):
            return web.json_response(self._completion(body, reply))
        return await self._stream(request, body, reply, garbage=fault is Fault.GARBAGE)

    def _scripted(self, body: dict[str, Any]) -> Reply | None:
        messages = json.dumps(body.get("messages"), sort_keys=True)
        if self._last_scripted is not None and self._last_scripted[0] == messages:
            return self._last_scripted[1]
        if not self.script:
            return None
        reply = self.script.pop(0)
        self._last_scripted = (messages, reply)
        return reply

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in reply.tool_calls
            ]
        return {
            "id": "chatcmpl-" + request_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], reply: Reply, *, garbage: bool
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        if garbage:
            await response.write(b"data: {this is not json\n\n")
            await response.write(b"data: [DONE]\n\n")
            return response
        completion_id = "chatcmpl-" + request_id()
        created = int(time.time())
        model = body.get("model", "")

        async def send(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **extra,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        for i, token in enumerate(tokens(reply.text) if reply.text else []):
            if i and self.token_delay_secs:
                await asyncio.sleep(self.token_delay_secs)
            await send({"content": token})
        for index, call in enumerate(reply.tool_calls):
            await send(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
            arguments = json.dumps(call.arguments)
            for start in range(0, len(arguments), 8):
                fragment = arguments[start : start + 8]
                await send({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
        await send({}, finish="tool_calls" if reply.tool_calls else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
