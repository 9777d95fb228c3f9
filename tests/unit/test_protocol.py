from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame, StartFrame

from ai_operator.audio_batch import IdleAudioGate
from ai_operator.client import audio_message, rtvi_message
from ai_operator.protocol import GuardedProtobufSerializer, InputRejected, to_mono_16k
from ai_operator.telephony import CallStart, twilio_serializer


def make_serializer(max_bytes: int = 4096):
    rejected: list[tuple[str, str]] = []

    async def on_reject(kind: str, message: str) -> None:
        rejected.append((kind, message))

    return GuardedProtobufSerializer(max_message_bytes=max_bytes, on_reject=on_reject), rejected


async def test_audio_frame_round_trip():
    ser, rejected = make_serializer()
    pcm = (np.arange(320) * 10).astype("<i2").tobytes()
    frame = await ser.deserialize(audio_message(pcm))
    assert frame.audio == pcm and frame.sample_rate == 16000 and frame.num_channels == 1
    assert rejected == []


OFFICIAL_CLIENT_READY = {
    "version": "1.0.0",
    "about": {"library": "@pipecat-ai/client-js", "library_version": "1.7.0", "platform": "web"},
}


async def _sent_kinds(ser: GuardedProtobufSerializer) -> list[str]:
    """What the client receives for an interruption, then a chunk of bot audio."""
    from pipecat.frames.frames import InterruptionFrame, OutputAudioRawFrame
    from pipecat.frames.protobufs import frames_pb2

    await ser.setup(StartFrame(audio_out_sample_rate=16000))
    kinds = []
    for frame in (InterruptionFrame(), OutputAudioRawFrame(b"\0\0" * 320, 16000, 1)):
        data = await ser.serialize(frame)
        if data is not None:
            kinds.append(frames_pb2.Frame.FromString(data).WhichOneof("frame"))
    return kinds


@pytest.mark.parametrize(
    "ready",
    [
        None,  # plain protobuf, no RTVI handshake: as from Pipecat itself
        {"version": "2.2.0", "about": {"library": "ai-operator-web", "platform": "web"}},
        {"version": "2.2.0", "about": {"library": "ai-operator-client"}},
    ],
)
async def test_clients_that_read_interruption_frames_get_them(ready):
    ser, _ = make_serializer()
    if ready is not None:
        await ser.deserialize(rtvi_message("client-ready", ready))
    assert await _sent_kinds(ser) == ["interruption", "audio"]


@pytest.mark.parametrize(
    "ready", [OFFICIAL_CLIENT_READY, {"version": "2.2.0"}, {"about": "not an object"}]
)
async def test_other_rtvi_clients_get_no_interruption_frame(ready):
    """The official client rejects the frame kind ("Unknown frame kind") and flushes on
    RTVI user-started-speaking instead; its audio still comes."""
    ser, rejected = make_serializer()
    await ser.deserialize(rtvi_message("client-ready", ready))
    assert rejected == []
    assert await _sent_kinds(ser) == ["audio"]


async def test_rtvi_message_becomes_transport_message():
    ser, _ = make_serializer()
    frame = await ser.deserialize(rtvi_message("client-ready", {"version": "2.2.0"}))
    assert frame.message["type"] == "client-ready"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xff\xff garbage", "malformed"),
        ("a text message", "text-message"),
        (b"x" * 5000, "oversized"),
        (audio_message(b""), "empty-audio"),
        (audio_message(b"\x01\x02\x03"), "odd-length"),
        (audio_message(b"\0\0" * 320, sample_rate=11025), "sample-rate"),
        (audio_message(b"\0\0" * 320, channels=6), "channels"),
        (b"", "unknown-frame"),
    ],
)
async def test_bad_input_is_rejected_with_a_reason(data, kind):
    ser, rejected = make_serializer()
    assert await ser.deserialize(data) is None
    assert rejected and rejected[0][0] == kind
    assert ser.rejected == 1


async def test_bad_json_in_message_frame():
    from pipecat.frames.protobufs import frames_pb2

    frame = frames_pb2.Frame()
    frame.message.data = "{not json"
    ser, rejected = make_serializer()
    assert await ser.deserialize(frame.SerializeToString()) is None
    assert rejected[0][0] == "bad-json"


async def test_repeated_errors_are_rate_limited():
    ser, rejected = make_serializer()
    for _ in range(50):
        await ser.deserialize(b"\xff\xff")
    assert ser.rejected == 50
    assert len(rejected) == 1


@pytest.mark.parametrize("rate", [8000, 24000, 44100, 48000])
def test_other_rates_are_resampled_to_16k(rate):
    secs = 0.1
    t = np.arange(int(rate * secs)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 10000).astype("<i2").tobytes()
    out = np.frombuffer(to_mono_16k(pcm, rate, 1), dtype="<i2")
    assert abs(len(out) - int(16000 * secs)) <= 2
    assert 5000 < np.abs(out).max() <= 11000


def test_stereo_is_downmixed():
    left = np.full(320, 1000, dtype="<i2")
    right = np.full(320, 3000, dtype="<i2")
    stereo = np.stack([left, right], axis=1).tobytes()
    out = np.frombuffer(to_mono_16k(stereo, 16000, 2), dtype="<i2")
    assert len(out) == 320 and set(out.tolist()) == {2000}


def test_sample_rate_error_lists_accepted_rates():
    with pytest.raises(InputRejected, match="16000"):
        to_mono_16k(b"\0\0", 12345, 1)


def test_rtvi_message_shape():
    from pipecat.frames.protobufs import frames_pb2

    frame = frames_pb2.Frame.FromString(rtvi_message("client-ready"))
    assert json.loads(frame.message.data)["label"] == "rtvi-ai"


async def test_silence_the_idle_gate_holds_back_never_becomes_a_frame():
    ser, rejected = make_serializer()
    ser.audio_gate = IdleAudioGate(silence_peak=33.0, settle_secs=0.0, idle=lambda: True)
    assert await ser.deserialize(audio_message(b"\0\0" * 320)) is None
    loud = (np.arange(320) * 10).astype("<i2").tobytes()
    assert (await ser.deserialize(audio_message(loud))).audio == loud
    message = await ser.deserialize(rtvi_message("client-ready", {"version": "2.2.0"}))
    assert message.message["type"] == "client-ready"
    assert ser.audio_gate.held == 1 and rejected == []


async def test_the_twilio_serializer_holds_back_silence_too():
    ser = twilio_serializer(CallStart(stream_sid="MZ1", call_sid="CA1", account_sid="AC1"))
    await ser.setup(StartFrame(audio_in_sample_rate=16_000, audio_out_sample_rate=16_000))
    ser.audio_gate = IdleAudioGate(silence_peak=33.0, settle_secs=0.0, idle=lambda: True)

    def media(mulaw: bytes) -> str:
        payload = base64.b64encode(mulaw).decode()
        return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": payload}})

    # Pipecat's resampler hands on Twilio's 20 ms frames about 100 ms at a time.
    silence = [await ser.deserialize(media(b"\xff" * 160)) for _ in range(10)]  # mu-law 0
    assert silence == [None] * 10 and ser.audio_gate.held >= 1
    loud = [await ser.deserialize(media(bytes(range(160)))) for _ in range(10)]
    assert any(isinstance(f, InputAudioRawFrame) and len(f.audio) for f in loud)
