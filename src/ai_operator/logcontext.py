"""The current session's id, for every log line written on its behalf.

`Session.run()` sets it; asyncio tasks and `to_thread` calls copy the context they were
started from, so lines logged by providers, failover or Pipecat callbacks carry the id of
the conversation they belong to without being handed it.
"""

from contextvars import ContextVar

SESSION_ID: ContextVar[str] = ContextVar("session_id", default="-")
