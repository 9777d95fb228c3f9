"""Conversation history in SQLite: conversations, their turns, and messages taken for people.

Writes go through one background thread with its own connection, so the audio path only
ever appends to a queue. Each finished turn is committed on its own: a crash in the middle
of a conversation keeps every turn that had finished.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id          TEXT PRIMARY KEY,
    started_at  REAL NOT NULL,
    ended_at    REAL,
    transport   TEXT NOT NULL DEFAULT 'websocket',
    providers   TEXT NOT NULL DEFAULT '{}',
    recording   TEXT  -- path of the WAV file (--record-audio), NULL when not recorded
);
CREATE TABLE IF NOT EXISTS turns (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    speaker         TEXT NOT NULL CHECK (speaker IN ('user', 'bot')),
    text            TEXT NOT NULL,
    started_at      REAL NOT NULL,
    ended_at        REAL NOT NULL,
    interrupted     INTEGER NOT NULL DEFAULT 0,
    latencies       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns (conversation_id, id);
CREATE TABLE IF NOT EXISTS messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    created_at      REAL NOT NULL,
    caller_name     TEXT NOT NULL DEFAULT '',
    callback        TEXT NOT NULL DEFAULT '',
    body            TEXT NOT NULL
);
"""

# Columns added since the first release, as (table, column, type): files written by an
# older version get them when opened (`_add_missing_columns`).
ADDED_COLUMNS = (("conversations", "recording", "TEXT"),)

_STOP = object()


def _add_missing_columns(db: sqlite3.Connection) -> None:
    for table, column, kind in ADDED_COLUMNS:
        present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column in present:
            continue
        try:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):  # else another process added it first
                raise


@dataclass
class Turn:
    """One side's turn. `latencies` holds seconds: voice_to_voice, stt, llm, tts..."""

    speaker: str
    text: str
    started_at: float
    ended_at: float
    interrupted: bool = False
    latencies: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredRecording:
    path: Path
    finished: bool  # the conversation has ended, so the file no longer grows


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.row_factory = sqlite3.Row
    return db


class HistoryStore:
    """SQLite-backed history. Reads open their own short-lived connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prepare(path)
        self._queue: queue.Queue[Any] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="history", daemon=True)
        self._writer.start()

    @staticmethod
    def prepare(path: Path) -> None:
        """Create the file, its tables and its WAL journal. Server processes forked after
        this (`--workers`) then only open it: two switching a new file to WAL at once
        fail with 'database is locked'."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = _open(path)
        try:
            with db:
                db.executescript(SCHEMA)
                _add_missing_columns(db)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        return _open(self.path)

    # -- writes: queued, never blocking the caller ------------------------------------------

    def _submit(self, op: Callable[[sqlite3.Connection], object]) -> None:
        self._queue.put(op)

    def start_conversation(
        self, conversation_id: str, *, transport: str, providers: dict[str, str]
    ) -> None:
        started = time.time()
        self._submit(
            lambda db: db.execute(
                "INSERT OR IGNORE INTO conversations (id, started_at, transport, providers) "
                "VALUES (?, ?, ?, ?)",
                (conversation_id, started, transport, json.dumps(providers)),
            )
        )

    def add_turn(self, conversation_id: str, turn: Turn) -> None:
        self._submit(
            lambda db: db.execute(
                "INSERT INTO turns (conversation_id, speaker, text, started_at, ended_at, "
                "interrupted, latencies) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation_id,
                    turn.speaker,
                    turn.text,
                    turn.started_at,
                    turn.ended_at,
                    int(turn.interrupted),
                    json.dumps(turn.latencies),
                ),
            )
        )

    def add_message(self, conversation_id: str, body: str, caller_name: str, callback: str) -> None:
        created = time.time()
        self._submit(
            lambda db: db.execute(
                "INSERT INTO messages (conversation_id, created_at, caller_name, callback, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (conversation_id, created, caller_name, callback, body),
            )
        )

    def set_recording(self, conversation_id: str, path: Path) -> None:
        """Link the conversation's WAV file (thread-safe: only queues the write)."""
        self._submit(
            lambda db: db.execute(
                "UPDATE conversations SET recording = ? WHERE id = ?", (str(path), conversation_id)
            )
        )

    def end_conversation(self, conversation_id: str) -> None:
        ended = time.time()
        self._submit(
            lambda db: db.execute(
                "UPDATE conversations SET ended_at = ? WHERE id = ?", (ended, conversation_id)
            )
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(lambda _db: done.set())
        return done.wait(timeout)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._writer.join(timeout=10)

    def _write_loop(self) -> None:
        db = self._connect()
        try:
            while True:
                op = self._queue.get()
                if op is _STOP:
                    return
                try:
                    op(db)
                    db.commit()
                except sqlite3.Error:
                    logger.exception("history write failed; continuing")
                    db.rollback()
        finally:
            db.close()

    # -- reads --------------------------------------------------------------------------------

    def conversations(self, limit: int = 100) -> list[dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT c.id, c.started_at, c.ended_at, c.transport, c.providers, "
                "COUNT(t.id) AS turns, "
                "(SELECT text FROM turns WHERE conversation_id = c.id AND speaker = 'user' "
                " ORDER BY id LIMIT 1) AS first_user_text "
                "FROM conversations c LEFT JOIN turns t ON t.conversation_id = c.id "
                "GROUP BY c.id ORDER BY c.started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [{**dict(r), "providers": json.loads(r["providers"])} for r in rows]

    def recording(self, conversation_id: str) -> StoredRecording | None:
        """The conversation's WAV file as stored, or None (unknown id or not recorded)."""
        with self._connect() as db:
            row = db.execute(
                "SELECT recording, ended_at FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        if row is None or not row["recording"]:
            return None
        return StoredRecording(Path(row["recording"]), finished=row["ended_at"] is not None)

    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """One conversation with its turns and messages, or None if unknown."""
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
            if row is None:
                return None
            turns = db.execute(
                "SELECT speaker, text, started_at, ended_at, interrupted, latencies "
                "FROM turns WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
            messages = db.execute(
                "SELECT created_at, caller_name, callback, body FROM messages "
                "WHERE conversation_id = ? ORDER BY id",
                (conversation_id,),
            ).fetchall()
        return {
            **dict(row),
            "providers": json.loads(row["providers"]),
            "turns": [
                asdict(
                    Turn(
                        speaker=t["speaker"],
                        text=t["text"],
                        started_at=t["started_at"],
                        ended_at=t["ended_at"],
                        interrupted=bool(t["interrupted"]),
                        latencies=json.loads(t["latencies"]),
                    )
                )
                for t in turns
            ],
            "messages": [dict(m) for m in messages],
        }
