// The page: connect, stream the mic, play the bot, show what is happening.
//
// Wires the audio engine (audio.js), the socket (connection.js), the transcript and the
// latency readout together and keeps the status indicator honest. `window.__aiop` exposes
// counters and state for the end-to-end test (tests/e2e/test_browser.py).

import { AudioEngine, MicrophoneError, WIRE_SAMPLE_RATE } from "./audio.js";
import { ConnState, Connection, describeClose, displayUrl, resolveWsUrl } from "./connection.js";
import { LatencyBoard } from "./latency.js";
import { Notices, describeServerMessage } from "./notices.js";
import {
  clientReady,
  encodeAudioFrame,
  encodeMessageFrame,
  isRtvi,
  monoPcm16,
} from "./protocol.js";
import { Transcript } from "./transcript.js";

// A 20 ms mic frame at least this loud (RMS of -1..1 samples, about -40 dBFS) is speech,
// for timing where the user stopped.
const SPEECH_RMS = 0.01;
// Speech older than this when the server ends the turn does not anchor the latency.
const MAX_ANCHOR_AGE_SECS = 10;
// The level meter shows -60..0 dBFS; its needle falls back at this rate per frame.
const METER_FLOOR_DB = -60;
const METER_DECAY = 0.85;

const Indicator = Object.freeze({
  DISCONNECTED: "disconnected",
  CONNECTING: "connecting",
  LISTENING: "listening",
  USER_SPEAKING: "user-speaking",
  THINKING: "thinking",
  BOT_SPEAKING: "bot-speaking",
});

const INDICATOR_TEXT = {
  [Indicator.DISCONNECTED]: "Disconnected",
  [Indicator.CONNECTING]: "Connecting…",
  [Indicator.LISTENING]: "Listening",
  [Indicator.USER_SPEAKING]: "You're speaking",
  [Indicator.THINKING]: "Thinking…",
  [Indicator.BOT_SPEAKING]: "Operator speaking",
};

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"),
  statusText: $("status-text"),
  connect: $("connect"),
  mute: $("mute"),
  meter: $("meter"),
  meterFill: $("meter-fill"),
  alert: $("alert"),
  server: $("server-url"),
};

const wsUrl = resolveWsUrl(window.location);
const transcript = new Transcript($("transcript"), $("transcript-scroll"));
const latency = new LatencyBoard($("latency-latest"), $("latency-history"));
const notices = new Notices($("notices"));
const stats = {
  audioFramesSent: 0,
  audioChunksReceived: 0,
  audioSamplesReceived: 0,
  audioSamplesPlayed: 0,
  audioSamplesBuffered: 0,
  audioSamplesDropped: 0,
  flushes: 0,
  interruptions: 0,
  badFrames: 0,
};

// Read by the end-to-end test; never written by it.
const hook = {
  state: Indicator.DISCONNECTED,
  connection: ConnState.IDLE,
  botReady: false,
  muted: false,
  sampleRate: null,
  wsUrl: displayUrl(wsUrl),
  stats,
  transcript: transcript.entries,
  turns: latency.turns,
  alerts: [],
  notices: notices.entries,
};
window.__aiop = hook;

/** The live call, or null. */
let call = null;

function newCall() {
  return {
    conn: null,
    engine: null,
    ready: false,
    userSpeaking: false,
    botSpeaking: false,
    awaitingReply: false,
    playing: false,
    muted: false,
    lastSpeechT: null,
    pendingAnchor: null,
    closedByUser: false,
    meterLevel: 0,
  };
}

// --- status, alerts, notices --------------------------------------------------------------

function indicator() {
  if (!call) return Indicator.DISCONNECTED;
  if (!call.ready) return Indicator.CONNECTING;
  if (call.userSpeaking) return Indicator.USER_SPEAKING;
  if (call.botSpeaking || call.playing) return Indicator.BOT_SPEAKING;
  if (call.awaitingReply) return Indicator.THINKING;
  return Indicator.LISTENING;
}

function renderStatus() {
  const state = indicator();
  hook.state = state;
  hook.connection = call && call.conn ? call.conn.state : ConnState.CLOSED;
  hook.muted = Boolean(call && call.muted);
  ui.status.dataset.state = state;
  ui.statusText.textContent = INDICATOR_TEXT[state] + (hook.muted ? " · muted" : "");
  const live = Boolean(call);
  ui.connect.textContent = live ? "Disconnect" : "Connect";
  ui.connect.classList.toggle("danger", live);
  ui.connect.setAttribute("aria-pressed", String(live));
  ui.mute.disabled = !live;
  ui.mute.setAttribute("aria-pressed", String(hook.muted));
  ui.mute.querySelector(".label").textContent = hook.muted ? "Unmute" : "Mute";
}

function showAlert(text) {
  hook.alerts.push(text);
  ui.alert.textContent = text;
  ui.alert.hidden = false;
}

function clearAlert() {
  ui.alert.hidden = true;
  ui.alert.textContent = "";
}

// --- connect / disconnect -----------------------------------------------------------------

async function connect() {
  clearAlert();
  call = newCall();
  const thisCall = call;
  renderStatus();
  try {
    thisCall.engine = await AudioEngine.start({
      onFrame: (frame) => onMicFrame(thisCall, frame),
      onPlayback: (message) => onPlayback(thisCall, message),
    });
  } catch (err) {
    if (call !== thisCall) return; // cancelled meanwhile
    call = null;
    renderStatus();
    showAlert(err instanceof MicrophoneError ? err.message : `Audio could not start: ${err.message || err}`);
    return;
  }
  if (call !== thisCall) {
    thisCall.engine.close(); // disconnected while the mic was opening
    return;
  }
  hook.sampleRate = thisCall.engine.sampleRate;
  thisCall.conn = new Connection(wsUrl, {
    onOpen: () => {
      thisCall.conn.send(encodeMessageFrame(clientReady()));
      renderStatus();
    },
    onFrame: (frame) => onServerFrame(thisCall, frame),
    onBadFrame: (err) => {
      stats.badFrames += 1;
      notices.add("error", `Unreadable message from the server: ${err.message}`);
    },
    onClose: (info) => onClosed(thisCall, info),
  });
  thisCall.conn.open();
  renderStatus();
}

function disconnect() {
  if (!call) return;
  call.closedByUser = true;
  if (call.conn && call.conn.state !== ConnState.CLOSED) call.conn.close();
  teardown(call);
}

function teardown(which) {
  if (which.engine) which.engine.close().catch(() => {});
  which.engine = null;
  if (call === which) call = null;
  ui.meterFill.style.transform = "scaleX(0)";
  transcript.endLine();
  renderStatus();
}

function onClosed(which, info) {
  if (!which.closedByUser) showAlert(describeClose(info));
  teardown(which);
}

function toggleMute() {
  if (!call || !call.engine) return;
  call.muted = !call.muted;
  call.engine.setMuted(call.muted);
  renderStatus();
}

// --- audio in and out ---------------------------------------------------------------------

function onMicFrame(which, { pcm, rms, t }) {
  if (which !== call) return;
  if (rms >= SPEECH_RMS && !which.muted) which.lastSpeechT = t;
  const db = rms > 0 ? 20 * Math.log10(rms) : METER_FLOOR_DB;
  const level = Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
  which.meterLevel = Math.max(level, which.meterLevel * METER_DECAY);
  ui.meterFill.style.transform = `scaleX(${which.meterLevel.toFixed(3)})`;
  ui.meter.setAttribute("aria-valuenow", String(Math.round(which.meterLevel * 100)));
  if (which.conn && which.conn.isOpen) {
    which.conn.send(encodeAudioFrame(new Uint8Array(pcm), WIRE_SAMPLE_RATE, 1));
    stats.audioFramesSent += 1;
  }
}

function onPlayback(which, message) {
  if (which !== call) return;
  switch (message.type) {
    case "stats":
      stats.audioSamplesPlayed = message.played;
      stats.audioSamplesBuffered = message.buffered;
      break;
    case "flushed":
      stats.audioSamplesDropped += message.dropped;
      break;
    case "playing":
      which.playing = message.playing;
      renderStatus();
      break;
    case "audible":
      if (which.pendingAnchor != null && message.t >= which.pendingAnchor) {
        const secs = message.t + which.engine.outputLatency - which.pendingAnchor;
        latency.voiceToVoice(Math.round(secs * 1000));
        which.pendingAnchor = null;
      }
      break;
    default:
      break;
  }
}

/** Barge-in: drop the bot audio not yet played, mark the reply cut off. */
function bargeIn(which) {
  which.engine.flush();
  stats.flushes += 1;
  transcript.botInterrupted(which.botSpeaking || which.playing);
}

function onServerFrame(which, frame) {
  if (which !== call) return;
  switch (frame.kind) {
    case "audio": {
      const mono = monoPcm16(frame.audio, frame.numChannels);
      stats.audioChunksReceived += 1;
      stats.audioSamplesReceived += mono.byteLength >> 1;
      which.engine.play(mono, frame.sampleRate || WIRE_SAMPLE_RATE);
      break;
    }
    case "interruption":
      stats.interruptions += 1;
      bargeIn(which);
      break;
    case "message":
      if (isRtvi(frame.message)) onRtvi(which, frame.message);
      break;
    default:
      break; // text and transcription frames carry nothing the page shows
  }
}

function onRtvi(which, { type, data }) {
  switch (type) {
    case "bot-ready":
      which.ready = true;
      hook.botReady = true;
      break;
    case "user-started-speaking":
      which.userSpeaking = true;
      if (which.botSpeaking || which.playing) bargeIn(which);
      latency.startTurn();
      break;
    case "user-stopped-speaking": {
      which.userSpeaking = false;
      which.awaitingReply = true;
      const now = which.engine.now;
      const recent = which.lastSpeechT != null && now - which.lastSpeechT < MAX_ANCHOR_AGE_SECS;
      which.pendingAnchor = recent ? which.lastSpeechT : now;
      break;
    }
    case "user-transcription":
      if (data) transcript.userTranscription(data.text, Boolean(data.final));
      break;
    case "bot-started-speaking":
      which.botSpeaking = true;
      which.awaitingReply = false;
      latency.replied();
      break;
    case "bot-stopped-speaking":
      which.botSpeaking = false;
      break;
    case "bot-output":
      transcript.botOutput(data);
      break;
    case "bot-tts-text":
      if (data) transcript.botTtsText(data.text);
      break;
    case "bot-interrupted":
      bargeIn(which);
      break;
    case "metrics":
      latency.metrics(data);
      break;
    case "error":
    case "error-response":
      onServerError(which, data || {});
      break;
    case "server-message":
      if (data && data.type === "turn-metrics") latency.serverTurn(data);
      else notices.add("info", describeServerMessage(data));
      break;
    default:
      return; // bot-llm-text, bot-tts-started, user-input, ...: nothing to show
  }
  renderStatus();
}

function onServerError(which, data) {
  const text = data.error || data.message || "unknown error";
  if (data.fatal) {
    showAlert(`The server ended the conversation: ${text}`);
    disconnect(); // the alert above says why; the close that follows adds nothing
  } else {
    notices.add("error", `Server error: ${text}`);
  }
}

// --- controls -----------------------------------------------------------------------------

ui.server.textContent = displayUrl(wsUrl);
ui.connect.addEventListener("click", () => (call ? disconnect() : connect()));
ui.mute.addEventListener("click", toggleMute);

const isSpace = (event) => event.code === "Space" || event.key === " ";
const typing = (target) =>
  target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));

// Space mutes while in a call (and does not also press the focused button).
document.addEventListener(
  "keydown",
  (event) => {
    if (!call || !isSpace(event) || typing(event.target)) return;
    event.preventDefault();
    if (!event.repeat) toggleMute();
  },
  true
);
document.addEventListener(
  "keyup",
  (event) => {
    if (call && isSpace(event) && !typing(event.target)) event.preventDefault();
  },
  true
);
window.addEventListener("pagehide", disconnect);

renderStatus();
latency.render();
