// Microphone and speaker pickers, and the person's choices remembered between visits.
//
// Devices come from enumerateDevices(); their names are only readable once the page may
// use the microphone, so the lists are filled again after it opens and whenever a device
// is plugged in or out. The speaker picker is hidden where the browser cannot route an
// AudioContext to a chosen output (AudioContext.setSinkId).

import { speakerSelectable } from "./audio.js";

const SYSTEM_DEFAULT = "";
// Chromium's aliases for whatever the system default is; "System default" covers them.
const ALIASES = new Set(["default", "communications"]);

/** localStorage that may be missing or refuse (private windows, file://). */
export const prefs = {
  get(key, fallback) {
    try {
      const value = window.localStorage.getItem(`aiop.${key}`);
      return value === null ? fallback : value;
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      window.localStorage.setItem(`aiop.${key}`, String(value));
    } catch {
      // not remembered, still applied
    }
  },
};

function fill(select, devices, noun, chosen) {
  const options = [new Option("System default", SYSTEM_DEFAULT)];
  devices
    .filter((d) => d.deviceId && !ALIASES.has(d.deviceId)) // no id: not allowed to see it yet
    .forEach((d, i) => options.push(new Option(d.label || `${noun} ${i + 1}`, d.deviceId)));
  select.replaceChildren(...options);
  // A remembered device that is gone falls back to the default, without forgetting it.
  select.value = options.some((o) => o.value === chosen) ? chosen : SYSTEM_DEFAULT;
  return options.map((o) => ({ id: o.value, label: o.textContent }));
}

export class DevicePicker {
  /** handlers: onMic(deviceId, previousId), onSpeaker(deviceId, previousId); "" is the default. */
  constructor({ micSelect, speakerSelect, speakerField, pickers }, handlers) {
    this.micSelect = micSelect;
    this.speakerSelect = speakerSelect;
    this.speakerField = speakerField;
    this.pickers = pickers;
    this.handlers = handlers;
    this.mic = prefs.get("mic", SYSTEM_DEFAULT);
    this.speaker = prefs.get("speaker", SYSTEM_DEFAULT);
    this.inputs = [];
    this.outputs = [];
    this.supported = Boolean(navigator.mediaDevices && navigator.mediaDevices.enumerateDevices);
    this.speakerSupported = this.supported && speakerSelectable();
    this.pickers.hidden = !this.supported;
    this.speakerField.hidden = !this.speakerSupported;
    if (!this.supported) return;
    micSelect.addEventListener("change", () => this.choose("mic", micSelect.value));
    speakerSelect.addEventListener("change", () => this.choose("speaker", speakerSelect.value));
    navigator.mediaDevices.addEventListener("devicechange", () => this.refresh());
  }

  choose(kind, deviceId) {
    const previous = this[kind];
    this[kind] = deviceId;
    prefs.set(kind, deviceId);
    if (kind === "mic") this.handlers.onMic(deviceId, previous);
    else this.handlers.onSpeaker(deviceId, previous);
  }

  /** Undo a choice that could not be applied (the device failed to open). */
  revert(kind, deviceId) {
    this[kind] = deviceId;
    prefs.set(kind, deviceId);
    (kind === "mic" ? this.micSelect : this.speakerSelect).value = deviceId;
  }

  async refresh() {
    if (!this.supported) return;
    let devices;
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch {
      return; // keep the lists we have
    }
    const ins = devices.filter((d) => d.kind === "audioinput");
    const outs = devices.filter((d) => d.kind === "audiooutput");
    this.inputs = fill(this.micSelect, ins, "Microphone", this.mic);
    if (this.speakerSupported) this.outputs = fill(this.speakerSelect, outs, "Speaker", this.speaker);
  }

  /** What is actually selected now ("" when a remembered device is missing). */
  get selectedMic() {
    return this.micSelect.value;
  }

  get selectedSpeaker() {
    return this.speakerSupported ? this.speakerSelect.value : SYSTEM_DEFAULT;
  }
}
