// Microphone capture on the audio thread: down-mix, resample to 16 kHz, cut 20 ms frames.
//
// Each frame is posted to the page as little-endian int16 PCM with its level (RMS, 0..1)
// and the AudioContext time its last sample was captured, which the page uses for the
// level meter and for timing voice-to-voice latency on the same clock as playback.

import { StreamResampler } from "./resampler.js";

const TARGET_RATE = 16000;
const FRAME_SAMPLES = 320; // 20 ms at 16 kHz
const RENDER_QUANTUM = 128;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new StreamResampler(sampleRate, TARGET_RATE, RENDER_QUANTUM * 4);
    this.mono = new Float32Array(RENDER_QUANTUM * 4);
    this.frame = new Float32Array(FRAME_SAMPLES);
    this.fill = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // source not connected yet
    const length = channels[0].length;
    let mono = channels[0];
    if (channels.length > 1) {
      mono = this.mono.subarray(0, length);
      mono.fill(0);
      for (const channel of channels) {
        for (let i = 0; i < length; i++) mono[i] += channel[i] / channels.length;
      }
    }
    const resampled = this.resampler.process(mono);
    const blockEnd = currentTime + length / sampleRate;
    for (let i = 0; i < resampled.length; i++) {
      this.frame[this.fill++] = resampled[i];
      if (this.fill === FRAME_SAMPLES) {
        // Time of this sample: the block's end, less the resampled samples still to come.
        this.emit(blockEnd - (resampled.length - 1 - i) / TARGET_RATE);
        this.fill = 0;
      }
    }
    return true;
  }

  emit(t) {
    const pcm = new ArrayBuffer(FRAME_SAMPLES * 2);
    const view = new DataView(pcm);
    let energy = 0;
    for (let i = 0; i < FRAME_SAMPLES; i++) {
      const s = Math.max(-1, Math.min(1, this.frame[i]));
      energy += s * s;
      view.setInt16(i * 2, s < 0 ? Math.round(s * 0x8000) : Math.round(s * 0x7fff), true);
    }
    const rms = Math.sqrt(energy / FRAME_SAMPLES);
    this.port.postMessage({ type: "frame", pcm, rms, t }, [pcm]);
  }
}

registerProcessor("aiop-capture", CaptureProcessor);
