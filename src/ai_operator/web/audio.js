// The page's audio engine: microphone capture and bot playback on one AudioContext.
//
// One context at the device's own rate carries both worklets, so capture timestamps and
// playback timestamps share a clock (voice-to-voice latency is measured on it). The capture
// worklet resamples to 16 kHz; the playback worklet resamples the bot's 16 kHz voice up and
// plays it through a gain node (the volume slider) to the chosen speaker.

export const WIRE_SAMPLE_RATE = 16000;
// Playback waits for this much audio before starting, to ride out network jitter.
const JITTER_MS = 60;
// Volume changes glide over about this long (seconds), so dragging the slider never clicks.
const VOLUME_GLIDE_SECS = 0.015;

const MIC_CONSTRAINTS = Object.freeze({
  audio: {
    echoCancellation: true,
    noiseSuppression: true,
    autoGainControl: true,
    channelCount: 1,
  },
  video: false,
});

/** The microphone could not be opened; `message` is written for the person at the page. */
export class MicrophoneError extends Error {
  constructor(message, reason = "") {
    super(message);
    this.reason = reason; // the DOMException's name, e.g. "NotAllowedError"
  }
}

const GONE = new Set(["NotFoundError", "DevicesNotFoundError", "OverconstrainedError"]);

function explainMicError(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "PermissionDeniedError":
    case "SecurityError":
      return (
        "Microphone access was denied. Allow the microphone for this page " +
        "(the icon at the left of the address bar), then press Connect again."
      );
    case "NotFoundError":
    case "DevicesNotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect one, then press Connect again.";
    case "NotReadableError":
    case "TrackStartError":
    case "AbortError":
      return "The microphone could not be started: another application may be using it.";
    default:
      return `The microphone could not be opened (${err && err.message ? err.message : err}).`;
  }
}

/** Whether this browser can send an AudioContext to a chosen output device. */
export function speakerSelectable() {
  return typeof AudioContext !== "undefined" && "setSinkId" in AudioContext.prototype;
}

function micConstraints(deviceId) {
  if (!deviceId) return MIC_CONSTRAINTS;
  return { ...MIC_CONSTRAINTS, audio: { ...MIC_CONSTRAINTS.audio, deviceId: { exact: deviceId } } };
}

/** Open the microphone `deviceId` ("" for the system default). */
async function openMicrophone(deviceId) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new MicrophoneError(
      "This browser gives no microphone access to this page: open it over https " +
        "(or http://localhost) in a current browser."
    );
  }
  try {
    return await navigator.mediaDevices.getUserMedia(micConstraints(deviceId));
  } catch (err) {
    throw new MicrophoneError(explainMicError(err), err && err.name);
  }
}

export class AudioEngine {
  /**
   * Open the mic and start both worklets. Call from a click handler (browsers only let
   * audio start after a user gesture).
   *   onFrame({pcm: ArrayBuffer, rms, t})   every 20 ms of 16 kHz mic audio
   *   onPlayback(message)                    reports from the playback worklet
   *   micId, speakerId                       devices ("" for the system default)
   *   volume                                 playback gain, 0..1
   */
  static async start({ onFrame, onPlayback, micId = "", speakerId = "", volume = 1 }) {
    let stream;
    try {
      stream = await openMicrophone(micId);
    } catch (err) {
      if (!micId || !GONE.has(err.reason)) throw err;
      stream = await openMicrophone(""); // the remembered microphone is gone: use the default
    }
    let context;
    try {
      context = new AudioContext({ latencyHint: "interactive" });
      const here = import.meta.url;
      await context.audioWorklet.addModule(new URL("capture-worklet.js", here));
      await context.audioWorklet.addModule(new URL("playback-worklet.js", here));
      const source = context.createMediaStreamSource(stream);
      // No outputs: the node is processed for its input alone, nothing reaches the speakers.
      const capture = new AudioWorkletNode(context, "aiop-capture", {
        numberOfInputs: 1,
        numberOfOutputs: 0,
        channelCount: 1,
        channelCountMode: "explicit",
      });
      capture.port.onmessage = (event) => onFrame(event.data);
      source.connect(capture);
      const playback = new AudioWorkletNode(context, "aiop-playback", {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: { sourceRate: WIRE_SAMPLE_RATE, jitterMs: JITTER_MS },
      });
      playback.port.onmessage = (event) => onPlayback(event.data);
      const gain = new GainNode(context, { gain: volume });
      playback.connect(gain).connect(context.destination);
      if (speakerId && speakerSelectable()) {
        await context.setSinkId(speakerId).catch(() => {}); // unknown now: stay on the default
      }
      await context.resume();
      return new AudioEngine(stream, context, source, capture, playback, gain);
    } catch (err) {
      stream.getTracks().forEach((track) => track.stop());
      if (context) context.close();
      throw err;
    }
  }

  constructor(stream, context, source, capture, playback, gain) {
    this.stream = stream;
    this.context = context;
    this.source = source;
    this.capture = capture;
    this.playback = playback;
    this.gain = gain;
    this.muted = false;
  }

  get sampleRate() {
    return this.context.sampleRate;
  }

  /** The audio clock, in seconds; capture `t` and playback `audible.t` are on it. */
  get now() {
    return this.context.currentTime;
  }

  /** Seconds between a sample leaving the worklet and reaching the speaker, if known. */
  get outputLatency() {
    return (this.context.outputLatency || 0) + (this.context.baseLatency || 0);
  }

  /** Muted, the track yields silence, which is still sent so the server hears the pause. */
  setMuted(muted) {
    this.muted = muted;
    for (const track of this.stream.getAudioTracks()) track.enabled = !muted;
  }

  /** The playback gain now (it glides towards the last `setVolume`). */
  get playbackGain() {
    return this.gain.gain.value;
  }

  /** Playback volume, 0..1; the microphone is not affected. */
  setVolume(volume) {
    this.gain.gain.setTargetAtTime(volume, this.context.currentTime, VOLUME_GLIDE_SECS);
  }

  /** The output device the bot is heard on ("" for the system default). */
  get speakerId() {
    const sink = this.context.sinkId;
    return typeof sink === "string" ? sink : "";
  }

  async setSpeaker(deviceId) {
    if (speakerSelectable()) await this.context.setSinkId(deviceId);
  }

  /**
   * Swap the microphone mid-call: the new one is opened first, so a failure leaves the old
   * one running (and throws a MicrophoneError).
   */
  async setMicrophone(deviceId) {
    const stream = await openMicrophone(deviceId);
    if (this.context.state === "closed") {
      stream.getTracks().forEach((track) => track.stop()); // hung up meanwhile
      return;
    }
    const source = this.context.createMediaStreamSource(stream);
    source.connect(this.capture);
    this.source.disconnect();
    this.stream.getTracks().forEach((track) => track.stop());
    this.stream = stream;
    this.source = source;
    this.setMuted(this.muted);
  }

  /** The label of the microphone in use (for the person, and the test hook). */
  get micLabel() {
    const [track] = this.stream.getAudioTracks();
    return track ? track.label : "";
  }

  /** Queue bot audio: `bytes` (a Uint8Array) is mono little-endian int16 at `sampleRate`. */
  play(bytes, sampleRate) {
    const pcm = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    this.playback.port.postMessage({ type: "audio", pcm, sampleRate }, [pcm]);
  }

  /** Drop all queued bot audio now (barge-in). */
  flush() {
    this.playback.port.postMessage({ type: "flush" });
  }

  async close() {
    this.stream.getTracks().forEach((track) => track.stop());
    this.source.disconnect();
    this.capture.port.onmessage = null;
    this.playback.port.onmessage = null;
    await this.context.close();
  }
}
