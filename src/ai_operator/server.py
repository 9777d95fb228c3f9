"""FastAPI app: the web page, /healthz and /ws (one Pipecat pipeline per connection)."""

from __future__ import annotations

import logging
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from ai_operator import __version__
from ai_operator.config import Settings
from ai_operator.providers import Resources
from ai_operator.session import Session

logger = logging.getLogger(__name__)

WEB_DIR = Path(str(importlib_resources.files("ai_operator") / "web"))


def create_app(settings: Settings, resources: Resources) -> FastAPI:
    """The ASGI app. Models are already loaded into `resources` (once per process)."""
    app = FastAPI(title="AI Operator", version=__version__, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.resources = resources
    app.state.active_sessions = 0

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "sessions": app.state.active_sessions,
            "providers": {"stt": settings.stt, "llm": settings.llm, "tts": settings.tts},
        }
        return JSONResponse(body)

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        session = Session(websocket, settings, resources)
        app.state.active_sessions += 1
        try:
            await session.run()
        finally:
            app.state.active_sessions -= 1

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
