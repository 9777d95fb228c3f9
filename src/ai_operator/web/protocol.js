// The /ws wire protocol: Pipecat's protobuf `Frame` messages and the RTVI JSON they carry.
//
// A hand-rolled codec for exactly the messages in pipecat/frames/frames.proto, so the page
// needs no protobuf library and no build step. Field numbers below are that file's; see
// docs/protocol.md for how the page uses each message.

// message Frame { oneof frame { ... } }
const FRAME_FIELD = Object.freeze({
  text: 1,
  audio: 2,
  transcription: 3,
  message: 4,
  interruption: 5,
});
// message AudioRawFrame { id=1; name=2; audio=3; sample_rate=4; num_channels=5; pts=6 }
const AUDIO_FIELD = Object.freeze({ audio: 3, sampleRate: 4, numChannels: 5 });
// message TextFrame { id=1; name=2; text=3 }
const TEXT_FIELD = Object.freeze({ text: 3 });
// message TranscriptionFrame { id=1; name=2; text=3; user_id=4; timestamp=5 }
const TRANSCRIPTION_FIELD = Object.freeze({ text: 3, userId: 4, timestamp: 5 });
// message MessageFrame { string data = 1 }
const MESSAGE_FIELD = Object.freeze({ data: 1 });

const WIRE = Object.freeze({ VARINT: 0, I64: 1, LEN: 2, I32: 5 });
const MAX_VARINT_BYTES = 10;

export const RTVI_LABEL = "rtvi-ai";
export const RTVI_VERSION = "2.2.0";
export const CLIENT_LIBRARY = "ai-operator-web";

/** The bytes of a message that is not a Pipecat frame we can read. */
export class ProtocolError extends Error {}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

class Writer {
  constructor() {
    this.bytes = [];
  }

  varint(value) {
    // Numbers, not bitwise ops: those would truncate to 32 bits.
    let v = value;
    while (v >= 0x80) {
      this.bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.bytes.push(v);
    return this;
  }

  tag(field, wireType) {
    return this.varint(field * 8 + wireType);
  }

  uint(field, value) {
    return value ? this.tag(field, WIRE.VARINT).varint(value) : this; // proto3: 0 is omitted
  }

  bytesField(field, data) {
    this.tag(field, WIRE.LEN).varint(data.length);
    for (let i = 0; i < data.length; i++) this.bytes.push(data[i]);
    return this;
  }

  finish() {
    return Uint8Array.from(this.bytes);
  }
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError("expected bytes (ArrayBuffer or a typed array)");
}

/** Frame.audio: `pcm` is little-endian int16 PCM (an Int16Array or raw bytes). */
export function encodeAudioFrame(pcm, sampleRate, numChannels = 1) {
  const inner = new Writer()
    .bytesField(AUDIO_FIELD.audio, asBytes(pcm))
    .uint(AUDIO_FIELD.sampleRate, sampleRate)
    .uint(AUDIO_FIELD.numChannels, numChannels)
    .finish();
  return new Writer().bytesField(FRAME_FIELD.audio, inner).finish();
}

/** Frame.message: `message` is serialized as JSON into MessageFrame.data. */
export function encodeMessageFrame(message) {
  const json = utf8Encoder.encode(JSON.stringify(message));
  const inner = new Writer().bytesField(MESSAGE_FIELD.data, json).finish();
  return new Writer().bytesField(FRAME_FIELD.message, inner).finish();
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

class Reader {
  constructor(bytes) {
    this.buf = bytes;
    this.pos = 0;
  }

  get done() {
    return this.pos >= this.buf.length;
  }

  varint() {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      if (this.pos >= this.buf.length) throw new ProtocolError("truncated varint");
      const byte = this.buf[this.pos++];
      value += (byte & 0x7f) * scale; // beyond 2^53 precision is lost; no field we read is that big
      if (byte < 0x80) return value;
      scale *= 0x80;
    }
    throw new ProtocolError("varint longer than 10 bytes");
  }

  tag() {
    const key = this.varint();
    const field = Math.floor(key / 8);
    if (field === 0) throw new ProtocolError("field number 0");
    return { field, wireType: key % 8 };
  }

  take(n) {
    if (this.pos + n > this.buf.length) throw new ProtocolError("truncated field");
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  lengthDelimited() {
    return this.take(this.varint());
  }

  skip(wireType) {
    switch (wireType) {
      case WIRE.VARINT:
        this.varint();
        return;
      case WIRE.I64:
        this.take(8);
        return;
      case WIRE.LEN:
        this.lengthDelimited();
        return;
      case WIRE.I32:
        this.take(4);
        return;
      default:
        throw new ProtocolError(`unsupported wire type ${wireType}`);
    }
  }
}

/** Read a message's fields: `handlers[field]` gets (reader, wireType); others are skipped. */
function readFields(bytes, handlers) {
  const reader = new Reader(bytes);
  while (!reader.done) {
    const { field, wireType } = reader.tag();
    const handler = handlers[field];
    if (handler) handler(reader, wireType);
    else reader.skip(wireType);
  }
}

function expect(wireType, expected, what) {
  if (wireType !== expected) throw new ProtocolError(`${what} has wire type ${wireType}`);
}

const readString = (reader, wireType, what) => {
  expect(wireType, WIRE.LEN, what);
  try {
    return utf8Decoder.decode(reader.lengthDelimited());
  } catch (err) {
    if (err instanceof ProtocolError) throw err;
    throw new ProtocolError(`${what} is not valid UTF-8`);
  }
};

function decodeAudio(bytes) {
  const frame = { kind: "audio", audio: new Uint8Array(0), sampleRate: 0, numChannels: 1 };
  readFields(bytes, {
    [AUDIO_FIELD.audio]: (r, w) => {
      expect(w, WIRE.LEN, "audio");
      frame.audio = r.lengthDelimited();
    },
    [AUDIO_FIELD.sampleRate]: (r, w) => {
      expect(w, WIRE.VARINT, "sample_rate");
      frame.sampleRate = r.varint();
    },
    [AUDIO_FIELD.numChannels]: (r, w) => {
      expect(w, WIRE.VARINT, "num_channels");
      frame.numChannels = r.varint() || 1;
    },
  });
  return frame;
}

function decodeText(bytes) {
  const frame = { kind: "text", text: "" };
  readFields(bytes, { [TEXT_FIELD.text]: (r, w) => (frame.text = readString(r, w, "text")) });
  return frame;
}

function decodeTranscription(bytes) {
  const frame = { kind: "transcription", text: "", userId: "", timestamp: "" };
  readFields(bytes, {
    [TRANSCRIPTION_FIELD.text]: (r, w) => (frame.text = readString(r, w, "text")),
    [TRANSCRIPTION_FIELD.userId]: (r, w) => (frame.userId = readString(r, w, "user_id")),
    [TRANSCRIPTION_FIELD.timestamp]: (r, w) => (frame.timestamp = readString(r, w, "timestamp")),
  });
  return frame;
}

function decodeMessage(bytes) {
  let data = "";
  readFields(bytes, { [MESSAGE_FIELD.data]: (r, w) => (data = readString(r, w, "data")) });
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    throw new ProtocolError("message frame does not hold JSON");
  }
  return { kind: "message", message };
}

const DECODERS = {
  [FRAME_FIELD.text]: decodeText,
  [FRAME_FIELD.audio]: decodeAudio,
  [FRAME_FIELD.transcription]: decodeTranscription,
  [FRAME_FIELD.message]: decodeMessage,
  [FRAME_FIELD.interruption]: () => ({ kind: "interruption" }),
};

/**
 * One binary WebSocket message -> {kind: "audio"|"message"|"interruption"|"text"|
 * "transcription"|"unknown", ...}. Throws ProtocolError on bytes that do not parse.
 */
export function decodeFrame(data) {
  const reader = new Reader(asBytes(data));
  let frame = { kind: "unknown" };
  while (!reader.done) {
    const { field, wireType } = reader.tag();
    const decode = DECODERS[field];
    if (!decode) {
      reader.skip(wireType);
      continue;
    }
    expect(wireType, WIRE.LEN, "frame");
    frame = decode(reader.lengthDelimited()); // a oneof: the last one wins
  }
  return frame;
}

/** Interleaved little-endian int16 PCM -> mono little-endian int16 PCM (a Uint8Array). */
export function monoPcm16(bytes, numChannels) {
  if (numChannels <= 1) return bytes;
  const src = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames = Math.floor(bytes.byteLength / (2 * numChannels));
  const out = new Uint8Array(frames * 2);
  const dst = new DataView(out.buffer);
  for (let f = 0; f < frames; f++) {
    let sum = 0;
    for (let c = 0; c < numChannels; c++) sum += src.getInt16((f * numChannels + c) * 2, true);
    dst.setInt16(f * 2, Math.round(sum / numChannels), true);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// RTVI
// ---------------------------------------------------------------------------------------

let nextId = 0;

/** An RTVI client message: {label, type, id, data?}. */
export function rtviMessage(type, data) {
  nextId += 1;
  const message = { label: RTVI_LABEL, type, id: `web-${Date.now().toString(36)}-${nextId}` };
  if (data !== undefined) message.data = data;
  return message;
}

/** The first thing a client sends; the server answers `bot-ready`, then greets. */
export function clientReady() {
  return rtviMessage("client-ready", {
    version: RTVI_VERSION,
    about: { library: CLIENT_LIBRARY, platform: "web" },
  });
}

/** Whether a decoded JSON value is an RTVI message (anything else is ignored). */
export function isRtvi(message) {
  return (
    message !== null &&
    typeof message === "object" &&
    message.label === RTVI_LABEL &&
    typeof message.type === "string"
  );
}
