"""Property-based fuzzing of /ws: 10,000+ generated messages over several connections.

Random bytes, mutated valid protobuf frames, audio frames with arbitrary formats, random
RTVI JSON and text messages, sent as fast as the server takes them. Whatever arrives, the
server answers with errors or a clean close (never an internal error), keeps running, and
afterwards still holds a normal spoken conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pipecat.frames.protobufs import frames_pb2
from tests.integration.conftest import healthz, running_server, wait_idle
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from ai_operator.client import CLIENT_READY, VoiceClient, audio_message

CONNECTIONS = 5
BATCH = 50
EXAMPLES = 220  # x BATCH = 11,000 messages
# Close codes a fuzzed connection may end with: normal (disconnect-bot), policy, too big.
ACCEPTABLE_CLOSES = {1000, 1008, 1009}

# --- strategies --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Weighted towards the types the server handles, but every kind appears. `disconnect-bot`
# is left out: it ends the session, which the fuzzing would then mostly spend reconnecting.
rtvi_types = st.sampled_from(
    ["client-ready"] * 4
    + ["client-message"] * 3
    + ["send-text", "raw-audio", "raw-audio-batch", "send-file", "ui-event", "dtmf"]
    + ["llm-function-call-result", "", "x" * 300]
) | st.text(max_size=12)
rtvi_json = st.fixed_dictionaries(
    {"label": st.sampled_from(["rtvi-ai", "rtvi-ai", "other"]), "type": rtvi_types},
    optional={
        "id": st.text(max_size=8) | st.integers(),
        "data": json_values
        | st.fixed_dictionaries({"content": st.text(max_size=30)})
        | st.just(CLIENT_READY),
    },
)


def _message_frame(payload: str) -> bytes:
    frame = frames_pb2.Frame()
    frame.message.data = payload
    return bytes(frame.SerializeToString())


rtvi_frames = st.one_of(
    rtvi_json.map(json.dumps).map(_message_frame),
    json_values.map(json.dumps).map(_message_frame),
    st.text(max_size=60).map(_message_frame),
)
audio_frames = st.builds(
    audio_message,
    st.binary(max_size=1920),
    sample_rate=st.sampled_from([0, 1, 8000, 11025, 16000, 22050, 44100, 48000, 2**31]),
    channels=st.integers(min_value=0, max_value=9),
)
valid_frames = st.one_of(audio_frames, rtvi_frames)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid frame with bytes flipped, cut, inserted or spliced."""
    data = bytearray(draw(valid_frames))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
        at = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(min_value=1, max_value=255))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at] = draw(valid_frames)
    return bytes(data)


OVERSIZED = b"\x12" + b"\0" * 70_000  # over the 64 KiB per-message limit


@st.composite
def messages(draw: st.DrawFn) -> bytes | str:
    """One client message; mostly binary, some text, rarely oversized."""
    kind = draw(st.sampled_from(["bytes"] * 3 + ["mutated"] * 3 + ["valid"] * 3 + ["text", "big"]))
    if kind == "bytes":
        return draw(st.binary(max_size=512))
    if kind == "mutated":
        return draw(mutated())
    if kind == "valid":
        return draw(valid_frames)
    if kind == "text":
        return draw(st.text(max_size=200))  # text where binary is expected
    return OVERSIZED


# --- the fuzzing client ------------------------------------------------------------------


class Pool:
    """A few sync connections, reconnected when the server closes one.

    No keepalive pings: websockets draws a ping's payload from the global `random` on its
    own thread, which Hypothesis reports as its examples' randomness changing under it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._stack = contextlib.ExitStack()  # websockets wants connect() as a context
        self.conns: list[ClientConnection | None] = [None] * CONNECTIONS
        self.closes: list[int] = []
        self.sent = 0
        self.received = 0
        self.turn = 0

    def _connection(self) -> ClientConnection:
        i = self.turn % CONNECTIONS
        self.turn += 1
        conn = self.conns[i]
        if conn is None:
            conn = connect(self.url, max_size=None, open_timeout=20, ping_interval=None)
            conn = self.conns[i] = self._stack.enter_context(conn)
        return conn

    def _closed(self, conn: ClientConnection, exc: ConnectionClosed) -> None:
        self.closes.append(exc.rcvd.code if exc.rcvd else 1006)
        self.conns[self.conns.index(conn)] = None

    def send_batch(self, batch: list[bytes | str]) -> None:
        conn = self._connection()
        try:
            for message in batch:
                conn.send(message)
                self.sent += 1
            self._drain(conn)
        except ConnectionClosed as exc:
            self._closed(conn, exc)

    def _drain(self, conn: ClientConnection) -> None:
        """Read what the server sent, so our own buffers never make it wait on us."""
        while True:
            try:
                conn.recv(timeout=0)
            except TimeoutError:
                return
            self.received += 1

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def server():
    args = [
        "--greeting", "",
        "--rate-limit-messages", "1000000",
        "--rate-limit-bytes", str(1 << 30),
        "--max-sessions", "64",
    ]  # fmt: skip
    with running_server(args, name="fuzz") as server:
        yield server


def test_fuzzing_the_websocket(server, question_pcm):
    pool = Pool(server.ws_url)
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(messages(), min_size=BATCH, max_size=BATCH))
    def fuzz(batch: list[bytes | str]) -> None:
        pool.send_batch(batch)

    try:
        fuzz()
    finally:
        pool.close()
    elapsed = time.monotonic() - started
    print(f"fuzz: {pool.sent} messages, {pool.received} replies in {elapsed:.1f} s")

    assert pool.sent >= 10_000
    assert pool.received > 0  # the server answered (errors, bot-ready...)
    assert set(pool.closes) <= ACCEPTABLE_CLOSES, pool.closes
    assert server.alive() and healthz(server)["status"] == "ok"
    asyncio.run(_still_converses(server, question_pcm))

    log = server.log()
    for sign in ("Traceback", "session on /ws", "exception receiving data"):
        assert sign not in log, f"{sign!r} in the server log"


async def _still_converses(server, question_pcm: bytes) -> None:
    await wait_idle(server, timeout=60)
    async with VoiceClient(server.ws_url) as client:
        await client.ready()
        end = await client.stream(question_pcm)
        trailing = asyncio.create_task(client.silence(30))
        try:
            await client.wait_for(lambda r: r.first_audible_after(end) is not None, timeout=60)
        finally:
            trailing.cancel()
    heard = " ".join(client.recording.texts("user-transcription")).lower()
    assert "capital" in heard and "france" in heard, heard


def test_a_handshake_with_a_bad_origin_never_opens(server):
    with pytest.raises(InvalidStatus) as err:
        connect(server.ws_url, origin="http://evil.example", open_timeout=10)
    assert err.value.response.status_code == 403
