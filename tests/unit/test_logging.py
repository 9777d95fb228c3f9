"""Server logging: Pipecat's loguru lines share our format and session id, and the advice
it gives about settings we chose on measurement does not warn in every conversation."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from loguru import logger as loguru_logger

from ai_operator.__main__ import configure_logging
from ai_operator.config import Settings
from ai_operator.logcontext import SESSION_ID


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    loguru_logger.remove()
    loguru_logger.configure(patcher=lambda record: None)
    loguru_logger.add(sys.stderr)


def test_pipecat_lines_have_our_format_and_the_session(restored_logging, capsys):
    configure_logging("info", Settings(_env_file=None, openai_api_key="sk-abcdef123456"))
    token = SESSION_ID.set("5e55i0n1")
    try:
        loguru_logger.warning("deepgram said no to sk-abcdef123456")
        loguru_logger.info("below the level kept for Pipecat")
        try:
            raise ValueError("boom")
        except ValueError:
            loguru_logger.exception("a provider failed")
    finally:
        SESSION_ID.reset(token)
    lines = capsys.readouterr().err.splitlines()
    assert "WARNING [5e55i0n1] test_logging: deepgram said no to" in lines[0]
    assert "sk-abcdef123456" not in "\n".join(lines)
    assert "below the level" not in "\n".join(lines)
    assert "ERROR   [5e55i0n1] test_logging: a provider failed" in lines[1]
    assert lines[-1] == "ValueError: boom"  # the traceback follows


def test_advice_on_deliberate_settings_is_not_a_warning(restored_logging, capsys):
    configure_logging("info")
    loguru_logger.warning(
        "TurnAnalyzerUserTurnStopStrategy#0: VAD stop_secs (0.15s) differs from the "
        "recommended default (0.2s). Built-in p99 latency values assume stop_secs=0.2."
    )
    loguru_logger.warning("another warning")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("another warning")
