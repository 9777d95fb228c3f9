// The page: its controls, and what it shows of the call (call.js) in progress.
//
// Keeps the status pill honest, and wires the buttons, device pickers, volume and keyboard
// to the call. `window.__aiop` exposes counters and state for the end-to-end tests
// (tests/e2e/test_browser.py).

import { Call } from "./call.js";
import { ConnState, displayUrl, resolveWsUrl } from "./connection.js";
import { DevicePicker, prefs } from "./devices.js";
import { LatencyBoard } from "./latency.js";
import { Notices } from "./notices.js";
import { Indicator, StatusView } from "./status.js";
import { Transcript } from "./transcript.js";

// The level meter shows -60..0 dBFS; its needle falls back at this rate per frame.
const METER_FLOOR_DB = -60;
const METER_DECAY = 0.85;

const $ = (id) => document.getElementById(id);
const ui = {
  connect: $("connect"),
  mute: $("mute"),
  meter: $("meter"),
  meterFill: $("meter-fill"),
  alert: $("alert"),
  server: $("server-url"),
  volume: $("volume"),
  volumeValue: $("volume-value"),
  historyLink: $("history-link"),
};

const wsUrl = resolveWsUrl(window.location);
const status = new StatusView($("status"), $("status-text"), $("status-cue"));
const transcript = new Transcript($("transcript"), $("transcript-scroll"));
const latency = new LatencyBoard($("latency-latest"), $("latency-history"));
const notices = new Notices($("notices"));
const devices = new DevicePicker(
  {
    micSelect: $("mic-select"),
    speakerSelect: $("speaker-select"),
    speakerField: $("speaker-field"),
    pickers: $("pickers"),
  },
  { onMic: switchMicrophone, onSpeaker: switchSpeaker }
);
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

/** The live call, or null. */
let call = null;
let meterLevel = 0;

// Read by the end-to-end tests; never written by them.
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
  sockets: 0, // sockets that opened
  reconnects: 0, // calls resumed on a new socket after a drop
  reconnect: null, // {attempt, delayMs} while the page waits to reconnect
  reconnectDelays: [], // every wait before a reconnect attempt, in ms
  interruptCues: 0,
  volume: 1,
  get playbackGain() {
    return call && call.engine ? call.engine.playbackGain : null;
  },
  get devices() {
    const engine = call && call.engine;
    return {
      supported: devices.supported,
      speakerSupported: devices.speakerSupported,
      inputs: devices.inputs,
      outputs: devices.outputs,
      mic: devices.selectedMic,
      speaker: devices.selectedSpeaker,
      micLabel: engine ? engine.micLabel : null,
      speakerId: engine ? engine.speakerId : null,
    };
  },
};
window.__aiop = hook;

// --- what the call shows ------------------------------------------------------------------

function render() {
  const state = call ? call.indicator : Indicator.DISCONNECTED;
  hook.state = state;
  hook.connection = call ? call.connState : ConnState.CLOSED;
  hook.muted = Boolean(call && call.muted);
  status.show(state, { muted: hook.muted });
  const live = Boolean(call);
  ui.connect.textContent = live ? "Disconnect" : "Connect";
  ui.connect.classList.toggle("danger", live);
  ui.connect.setAttribute("aria-pressed", String(live));
  ui.mute.disabled = !live;
  ui.mute.setAttribute("aria-pressed", String(hook.muted));
  ui.mute.querySelector(".label").textContent = hook.muted ? "Unmute" : "Mute";
}

/** `kind`: "error" (the call is over or cannot start) or "warn" (it is trying again). */
function alert(text, kind = "error") {
  hook.alerts.push(text);
  ui.alert.textContent = text;
  ui.alert.dataset.kind = kind;
  ui.alert.hidden = false;
}

function clearAlert() {
  ui.alert.hidden = true;
  ui.alert.textContent = "";
}

function meter(rms) {
  const db = rms > 0 ? 20 * Math.log10(rms) : METER_FLOOR_DB;
  const level = Math.min(1, Math.max(0, (db - METER_FLOOR_DB) / -METER_FLOOR_DB));
  meterLevel = Math.max(level, meterLevel * METER_DECAY);
  ui.meterFill.style.transform = `scaleX(${meterLevel.toFixed(3)})`;
  ui.meter.setAttribute("aria-valuenow", String(Math.round(meterLevel * 100)));
}

function ended(which) {
  if (call !== which) return;
  call = null;
  meterLevel = 0;
  ui.meterFill.style.transform = "scaleX(0)";
  ui.meter.setAttribute("aria-valuenow", "0");
  render();
}

const view = {
  transcript,
  latency,
  notices,
  status,
  stats,
  hook,
  alert,
  clearAlert,
  render,
  meter,
  ended,
};

// --- controls -----------------------------------------------------------------------------

function connect() {
  clearAlert();
  call = new Call(view, wsUrl);
  render();
  const started = call;
  call
    .start({ micId: devices.selectedMic, speakerId: devices.selectedSpeaker, volume: hook.volume })
    .then(() => {
      if (call === started && started.engine) devices.refresh(); // names are readable now
    });
}

function disconnect() {
  if (call) call.hangUp();
}

function toggleMute() {
  if (call) call.toggleMute();
}

async function switchMicrophone(deviceId, previousId) {
  const engine = call && call.engine;
  if (!engine) return; // used when the next call starts
  try {
    await engine.setMicrophone(deviceId);
    notices.add("info", `Microphone: ${engine.micLabel || "system default"}.`);
  } catch (err) {
    devices.revert("mic", previousId);
    notices.add("error", err.message || String(err));
  }
}

async function switchSpeaker(deviceId, previousId) {
  const engine = call && call.engine;
  if (!engine) return;
  try {
    await engine.setSpeaker(deviceId);
  } catch (err) {
    devices.revert("speaker", previousId);
    notices.add("error", `The speaker could not be selected (${err.message || err}).`);
  }
}

function applyVolume() {
  const percent = Number(ui.volume.value);
  hook.volume = percent / 100;
  ui.volumeValue.textContent = `${percent}%`;
  prefs.set("volume", percent);
  if (call && call.engine) call.engine.setVolume(hook.volume);
}

ui.server.textContent = displayUrl(wsUrl);
const token = new URLSearchParams(window.location.search).get("token");
if (token) ui.historyLink.href = `history?token=${encodeURIComponent(token)}`;
ui.connect.addEventListener("click", () => (call ? disconnect() : connect()));
ui.mute.addEventListener("click", toggleMute);
const savedVolume = Number(prefs.get("volume", 100));
ui.volume.value = String(Number.isFinite(savedVolume) ? Math.min(100, Math.max(0, savedVolume)) : 100);
ui.volume.addEventListener("input", applyVolume);

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

applyVolume();
devices.refresh();
render();
latency.render();
