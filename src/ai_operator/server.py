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

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ai_operator import __version__
from ai_operator.config import Settings
from ai_operator.connection import TransportControlMiddleware
from ai_operator.faults import parse_faults
from ai_operator.providers import Resources
from ai_operator.security import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    AccessPolicy,
    close_reason,
)
from ai_operator.session import Session

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


def create_app(settings: Settings, resources: Resources) -> FastAPI:
    """The ASGI app. Models are already loaded into `resources` (once per process)."""
    app = FastAPI(title="AI Operator", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(TransportControlMiddleware)
    app.state.settings = settings
    app.state.resources = resources
    app.state.active_sessions = 0
    access = AccessPolicy(settings)
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
            "sessions": app.state.active_sessions,
            "max_sessions": settings.max_sessions,
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
        if app.state.active_sessions >= settings.max_sessions:
            reason = f"server busy: all {settings.max_sessions} sessions in use, try again later"
            logger.warning("refused /ws from %s: %s", _peer(websocket), reason)
            await websocket.accept()
            await websocket.close(CLOSE_TRY_AGAIN_LATER, close_reason(reason))
            return
        app.state.active_sessions += 1
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
            app.state.active_sessions -= 1

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state is WebSocketState.CONNECTED:
        try:
            await asyncio.wait_for(websocket.close(code, reason), timeout=2.0)
        except (TimeoutError, OSError, RuntimeError, WebSocketDisconnect):
            pass  # the client is gone already
