"""HTTP routes beside the conversation socket: /history, its JSON API, and /metrics.

When a token is configured (`--token`), the history API asks for it too (the page sends it
as `Authorization: Bearer`): transcripts are as private as the conversations themselves.
SQLite reads run in a thread so a long history never stalls the event loop (and the audio).
A conversation's recording (`--record-audio`) is found by its id in the history, never by
a path taken from the URL.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response

from ai_operator.history import HistoryStore
from ai_operator.metrics import Metrics
from ai_operator.security import AccessPolicy


def build_router(
    *, web_dir: Path, history: HistoryStore | None, metrics: Metrics, access: AccessPolicy
) -> APIRouter:
    router = APIRouter()

    def require_token(request: Request) -> None:
        if not access.token_ok(request.headers, request.query_params):
            raise HTTPException(status_code=401, detail="a valid token is required")

    def require_history() -> HistoryStore:
        if history is None:
            raise HTTPException(status_code=404, detail="history is disabled on this server")
        return history

    @router.get("/history", include_in_schema=False)
    async def history_page() -> FileResponse:
        return FileResponse(web_dir / "history.html", headers={"Cache-Control": "no-cache"})

    @router.get("/api/conversations")
    async def list_conversations(request: Request, limit: int = 100) -> list[dict[str, Any]]:
        require_token(request)
        store = require_history()
        return await asyncio.to_thread(store.conversations, max(1, min(limit, 1000)))

    @router.get("/api/conversations/{conversation_id}")
    async def get_conversation(request: Request, conversation_id: str) -> dict[str, Any]:
        require_token(request)
        store = require_history()
        convo = await asyncio.to_thread(store.conversation, conversation_id)
        if convo is None:
            raise HTTPException(status_code=404, detail=f"no conversation {conversation_id!r}")
        # The file's path stays on the server; clients get the route that serves it.
        recorded = convo.pop("recording", None)
        convo["recording"] = (
            str(request.url_for("conversation_recording", conversation_id=conversation_id).path)
            if recorded
            else None
        )
        return convo

    @router.get("/api/conversations/{conversation_id}/recording", name="conversation_recording")
    async def get_recording(request: Request, conversation_id: str) -> Response:
        require_token(request)
        store = require_history()
        recording = await asyncio.to_thread(store.recording, conversation_id)
        if recording is None or not await asyncio.to_thread(recording.path.is_file):
            raise HTTPException(status_code=404, detail=f"no recording of {conversation_id!r}")
        if recording.finished:
            return FileResponse(
                recording.path,
                media_type="audio/wav",
                filename=f"{conversation_id}.wav",
                content_disposition_type="inline",
            )
        # Still being written: a snapshot in one piece, so the length sent stays true.
        snapshot = await asyncio.to_thread(recording.path.read_bytes)
        return Response(snapshot, media_type="audio/wav")

    @router.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return router
