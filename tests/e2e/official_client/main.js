// The official Pipecat JavaScript client, unchanged, pointed at our /ws.
//
// Bundled at test time by tests/e2e/test_official_client.py (esbuild, one IIFE file) and
// loaded by index.html as `index.html?ws=ws://host:port/ws`. Everything the client reports
// through its public callbacks is recorded in `window.__official` for the test to inspect.
import { PipecatClient } from "@pipecat-ai/client-js";
import { WavMediaManager, WebSocketTransport } from "@pipecat-ai/websocket-transport";

// WebSocketTransport labels the microphone audio it sends with `recorderSampleRate`
// (16 kHz by default), but WavMediaManager records at 24 kHz unless told otherwise:
// the two must agree or the server hears the user slowed down by a factor of 1.5.
const MIC_SAMPLE_RATE = 16000;
// The transport's own default chunk for its Daily media manager: 32 ms at 16 kHz.
const MIC_CHUNK_SAMPLES = 512;

const state = {
  transportStates: [],
  connected: false,
  disconnected: false,
  botReady: null, // BotReadyData once the server answered client-ready
  userTranscripts: [], // {text, final, t}
  botOutputs: [], // {text, aggregatedBy, spokenStatus, t}
  botStartedSpeaking: [], // timestamps (ms, performance.now())
  botStoppedSpeaking: [],
  botAudio: [], // one entry per chunk handed to the media manager: {t, samples, rms}
  playerSampleRate: null,
  serverMessages: [],
  errors: [], // onError, onMessageError, onDeviceError and connect() failures, as text
};
window.__official = state;

const now = () => performance.now();
const describe = (value) => {
  try {
    return typeof value === "string" ? value : JSON.stringify(value);
  } catch {
    return String(value);
  }
};

function rms(samples) {
  if (!samples.length) return 0;
  let sum = 0;
  for (const s of samples) sum += s * s;
  return Math.sqrt(sum / samples.length);
}

/** WavMediaManager that also notes every chunk of bot audio it is given to play. */
class ObservedWavMediaManager extends WavMediaManager {
  bufferBotAudio(data, id) {
    const samples = data instanceof Int16Array ? data : new Int16Array(data);
    state.botAudio.push({ t: now(), samples: samples.length, rms: rms(samples) });
    // The library's internal player; it plays every chunk at this one fixed rate.
    state.playerSampleRate = this._wavStreamPlayer?.sampleRate ?? null;
    return super.bufferBotAudio(data, id);
  }
}

const wsUrl = new URLSearchParams(window.location.search).get("ws");

const client = new PipecatClient({
  transport: new WebSocketTransport({
    mediaManager: new ObservedWavMediaManager(MIC_CHUNK_SAMPLES, MIC_SAMPLE_RATE),
    recorderSampleRate: MIC_SAMPLE_RATE,
  }),
  enableMic: true,
  enableCam: false,
  callbacks: {
    onTransportStateChanged: (s) => state.transportStates.push(s),
    onConnected: () => {
      state.connected = true;
    },
    onDisconnected: () => {
      state.disconnected = true;
    },
    onBotReady: (data) => {
      state.botReady = data;
    },
    onUserTranscript: (data) =>
      state.userTranscripts.push({ text: data.text, final: data.final, t: now() }),
    onBotOutput: (data) =>
      state.botOutputs.push({
        text: data.text,
        aggregatedBy: data.aggregated_by ?? null,
        spokenStatus: data.spoken_status ?? null,
        t: now(),
      }),
    onBotStartedSpeaking: () => state.botStartedSpeaking.push(now()),
    onBotStoppedSpeaking: () => state.botStoppedSpeaking.push(now()),
    onServerMessage: (data) => state.serverMessages.push(data),
    onError: (message) => state.errors.push(`error: ${describe(message)}`),
    onMessageError: (message) => state.errors.push(`message-error: ${describe(message)}`),
    onDeviceError: (error) => state.errors.push(`device-error: ${describe(error)}`),
  },
});
window.__officialClient = client;

if (!wsUrl) {
  state.errors.push("no ?ws= URL given to the page");
} else {
  client.connect({ wsUrl }).catch((err) => state.errors.push(`connect: ${err?.message ?? err}`));
}
