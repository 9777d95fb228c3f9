from __future__ import annotations

import sqlite3

from ai_operator.history import HistoryStore, Turn


def test_turns_are_stored_in_order_with_latencies(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.start_conversation("c1", transport="websocket", providers={"stt": "local"})
    store.add_turn("c1", Turn("bot", "Hello!", 1.0, 2.0))
    store.add_turn("c1", Turn("user", "What time is it?", 3.0, 4.0))
    store.add_turn(
        "c1", Turn("bot", "It is noon", 4.5, 5.0, interrupted=True, latencies={"stt": 0.2})
    )
    store.add_message("c1", "Call me back", "Ann", "555-0100")
    store.end_conversation("c1")
    assert store.flush()
    convo = store.conversation("c1")
    assert convo is not None and convo["ended_at"] is not None
    assert [t["speaker"] for t in convo["turns"]] == ["bot", "user", "bot"]
    assert convo["turns"][2]["interrupted"] is True
    assert convo["turns"][2]["latencies"] == {"stt": 0.2}
    assert convo["messages"][0]["caller_name"] == "Ann"
    listing = store.conversations()
    assert listing[0]["id"] == "c1" and listing[0]["turns"] == 3
    assert listing[0]["first_user_text"] == "What time is it?"
    store.close()


def test_finished_turns_survive_a_crash(tmp_path):
    """Nothing is closed or ended: the turns already written are on disk anyway."""
    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    store.start_conversation("c2", transport="websocket", providers={})
    store.add_turn("c2", Turn("user", "first", 1.0, 2.0))
    assert store.flush()
    with sqlite3.connect(path) as db:  # a different process would see the same
        rows = db.execute("SELECT text FROM turns WHERE conversation_id='c2'").fetchall()
    assert rows == [("first",)]


def test_unknown_conversation_is_none(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    assert store.conversation("nope") is None
    store.close()


def test_cli_lists_and_exports(tmp_path, capsys):
    import json

    from ai_operator.__main__ import main

    path = tmp_path / "h.sqlite3"
    store = HistoryStore(path)
    store.start_conversation("abc123", transport="websocket", providers={})
    store.add_turn("abc123", Turn("user", "book a table", 1.0, 2.0))
    assert store.flush()
    store.close()
    args = ["history", "--env-file", "/dev/null", "--history-path", str(path)]
    assert main(args) == 0
    assert "abc123" in capsys.readouterr().out
    assert main([*args, "--export", "abc123"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["turns"][0]["text"] == "book a table"
    assert main([*args, "--export", "missing"]) == 1
