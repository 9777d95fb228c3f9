"""FastAPI app: the web page, /healthz and /ws (one Pipecat pipeline per connection).

/ws admission, in order: the Origin allowlist (a foreign page never gets a socket: the
handshake is refused with HTTP 403), then the token and the session limit (the socket is
accepted and closed at once with code 1008 or 1013 and a reason, so a page can show why).
Nothing of a session is built before all three pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ai_operator import __version__, heap
from ai_operator.api import build_router
from ai_operator.config import Settings
from ai_operator.connection import TransportControlMiddleware
from ai_operator.errors import ProtocolError
from ai_operator.faults import parse_faults
from ai_operator.metrics import Metrics
from ai_operator.providers import Resources
from ai_operator.security import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    AccessPolicy,
    close_reason,
)
from ai_operator.session import Session
from ai_operator.telephony import (
    HANDSHAKE_TIMEOUT_SECS,
    public_url,
    read_call_start,
    signature_valid,
    twiml_connect_stream,
)
from ai_operator.workers import SessionSlots

logger = logging.getLogger(__name__)

WEB_DIR = Path(str(importlib_resources.files("ai_operator") / "web"))


def resident_bytes() -> int | None:
    """This process's resident memory (Linux /proc), or None where unavailable."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def process_stats() -> dict[str, int | None]:
    """What a leak would show: asyncio tasks, threads, resident memory."""
    return {
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "rss_bytes": resident_bytes(),
    }


def _peer(websocket: WebSocket) -> str:
    client = websocket.client
    return f"{client.host}:{client.port}" if client else "?"


def create_app(
    settings: Settings, resources: Resources, slots: SessionSlots | None = None
) -> FastAPI:
    """The ASGI app. Models are already loaded into `resources` (once per process);
    `slots` counts the open conversations (of every worker process, when shared)."""
    app = FastAPI(title="AI Operator", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(TransportControlMiddleware)
    app.state.settings = settings
    app.state.resources = resources
    if slots is None:  # one process: it serves as soon as it exists
        slots = SessionSlots()
        slots.serving()
    access = AccessPolicy(settings)
    if resources.metrics is None:
        resources.metrics = Metrics()
    app.include_router(
        build_router(
            web_dir=WEB_DIR, history=resources.history, metrics=resources.metrics, access=access
        )
    )
    faults = parse_faults(settings.fault_inject)
    if faults:
        logger.warning("FAULT INJECTION ACTIVE (tests only): %s", settings.fault_inject)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "sessions": slots.in_use,
            "max_sessions": settings.max_sessions,
            # Each worker process's open conversations (-1: still loading).
            "worker_sessions": slots.per_worker,
            "providers": {"stt": settings.stt, "llm": settings.llm, "tts": settings.tts},
            "process": process_stats(),
        }
        return JSONResponse(body)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        refusal = access.check(websocket.headers, websocket.query_params)
        if refusal is not None:
            logger.warning("refused /ws from %s: %s", _peer(websocket), refusal.reason)
            if refusal.check == "token":
                await websocket.accept()
            await websocket.close(CLOSE_POLICY_VIOLATION, close_reason(refusal.reason))
            return
        if not slots.take(settings.max_sessions):
            reason = f"server busy: all {settings.max_sessions} sessions in use, try again later"
            logger.warning("refused /ws from %s: %s", _peer(websocket), reason)
            await websocket.accept()
            await websocket.close(CLOSE_TRY_AGAIN_LATER, close_reason(reason))
            return
        try:
            await websocket.accept()
            await Session(websocket, settings, resources, faults=faults).run()
        except (WebSocketDisconnect, OSError) as exc:  # gone before the session started
            logger.warning("client on /ws from %s left: %r", _peer(websocket), exc)
        except Exception:
            # The boundary of one connection: log it in full, keep serving the others.
            logger.exception("session on /ws from %s failed", _peer(websocket))
            await _close_quietly(websocket, CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            await heap.collect_if_idle(slots.release())

    twilio_token = (
        settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
    )

    @app.post("/twilio/voice", include_in_schema=False)
    async def twilio_voice(request: Request) -> Response:
        """Twilio's incoming-call webhook: answer by streaming the call to /twilio/stream."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        query = f"?{request.url.query}" if request.url.query else ""
        url = public_url(
            request.headers, request.url.scheme, "/twilio/voice" + query, settings.public_url
        )
        signature = request.headers.get("x-twilio-signature")
        if twilio_token and not signature_valid(twilio_token, url, form, signature):
            logger.warning("refused /twilio/voice: bad or missing X-Twilio-Signature")
            return Response("invalid Twilio signature", status_code=403)
        stream = public_url(
            request.headers, request.url.scheme, "/twilio/stream", settings.public_url
        )
        stream = stream.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        caller = {"from": form.get("From", ""), "call_sid": form.get("CallSid", "")}
        return Response(twiml_connect_stream(stream, caller), media_type="application/xml")

    @app.websocket("/twilio/stream")
    async def twilio_stream(websocket: WebSocket) -> None:
        """Twilio Media Streams: one phone call, the same pipeline as the browser."""
        scheme = "https" if websocket.url.scheme == "wss" else "http"
        url = public_url(websocket.headers, scheme, "/twilio/stream", settings.public_url)
        url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        signature = websocket.headers.get("x-twilio-signature")
        if twilio_token and not signature_valid(twilio_token, url, {}, signature):
            logger.warning("refused /twilio/stream from %s: bad signature", _peer(websocket))
            await websocket.close(CLOSE_POLICY_VIOLATION, "invalid Twilio signature")
            return
        if not slots.take(settings.max_sessions):
            logger.warning("refused call from %s: all sessions in use", _peer(websocket))
            await websocket.close(CLOSE_TRY_AGAIN_LATER, "server busy")
            return
        try:
            await websocket.accept()
            start = await asyncio.wait_for(read_call_start(websocket), HANDSHAKE_TIMEOUT_SECS)
            logger.info("call %s started (stream %s)", start.call_sid, start.stream_sid)
            await Session(websocket, settings, resources, faults=faults, call=start).run()
        except (ProtocolError, TimeoutError) as exc:
            logger.warning("call from %s refused: %s", _peer(websocket), exc)
            await _close_quietly(websocket, CLOSE_POLICY_VIOLATION, close_reason(str(exc)))
        except WebSocketDisconnect:
            logger.info("call from %s hung up before it started", _peer(websocket))
        except Exception:
            logger.exception("call on /twilio/stream from %s failed", _peer(websocket))
            await _close_quietly(websocket, CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            await heap.collect_if_idle(slots.release())

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        try:
            await asyncio.wait_for(websocket.close(code, reason), timeout=2.0)
        except (TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
            pass  # the client is gone already
