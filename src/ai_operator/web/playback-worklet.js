// Bot voice playback on the audio thread: a small jitter buffer, upsampling, instant flush.
//
// The page posts each received chunk ({type: "audio", pcm: int16 LE ArrayBuffer,
// sampleRate}); it is resampled to the context rate on arrival and queued. Playback starts
// once `jitterMs` of audio is queued (or the first chunk has waited that long) and pauses
// again whenever the queue runs dry. {type: "flush"} drops everything queued at once: that
// is how barge-in silences the bot. The worklet reports back:
//   {type: "stats", played, buffered}  samples (at the source rate) played and still queued
//   {type: "audible", t}               context time the first audible sample of a burst played
//   {type: "playing", playing}         the queue started playing / ran dry
//   {type: "flushed", dropped}         samples (at the source rate) a flush discarded

import { StreamResampler } from "./resampler.js";

const STATS_INTERVAL_SECS = 0.05;
// A block counts as audible above this RMS: 100 in int16 units (-50 dBFS), as on the server.
const AUDIBLE_RMS = 100 / 32768;
// The most source samples resampled in one step (chunks larger than this are sliced).
const MAX_SLICE = 4096;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions || {};
    this.sourceRate = opts.sourceRate || 16000;
    this.jitterSecs = (opts.jitterMs ?? 60) / 1000;
    this.resampler = new StreamResampler(this.sourceRate, sampleRate, MAX_SLICE);
    this.queue = []; // Float32Array chunks at the context rate
    this.head = 0; // read position in queue[0]
    this.queued = 0; // context-rate samples queued
    this.firstQueuedAt = null;
    this.playing = false;
    this.armed = true; // report the next audible sample
    this.played = 0; // context-rate samples played since start
    this.lastStats = 0;
    this.lastReported = "";
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(msg) {
    if (msg.type === "audio") this.enqueue(msg.pcm, msg.sampleRate || this.sourceRate);
    else if (msg.type === "flush") this.flush();
  }

  enqueue(pcm, rate) {
    if (rate !== this.sourceRate) {
      this.sourceRate = rate;
      this.resampler = new StreamResampler(rate, sampleRate, MAX_SLICE);
    }
    const view = new DataView(pcm);
    const count = pcm.byteLength >> 1;
    const samples = new Float32Array(count);
    for (let i = 0; i < count; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
    for (let start = 0; start < count; start += MAX_SLICE) {
      const out = this.resampler.process(samples.subarray(start, start + MAX_SLICE));
      if (out.length === 0) continue;
      this.queue.push(out.slice()); // `out` is the resampler's buffer: copy it
      this.queued += out.length;
    }
    if (this.firstQueuedAt === null) this.firstQueuedAt = currentTime;
  }

  flush() {
    const dropped = Math.round(this.toSource(this.queued));
    this.queue = [];
    this.head = 0;
    this.queued = 0;
    this.firstQueuedAt = null;
    this.resampler.reset();
    this.armed = true;
    this.setPlaying(false);
    this.port.postMessage({ type: "flushed", dropped });
    this.reportStats(true);
  }

  toSource(contextSamples) {
    return (contextSamples * this.sourceRate) / sampleRate;
  }

  setPlaying(playing) {
    if (playing === this.playing) return;
    this.playing = playing;
    this.port.postMessage({ type: "playing", playing });
  }

  process(_inputs, outputs) {
    const output = outputs[0];
    const out = output[0];
    if (!this.playing && this.queued > 0) {
      const waited = currentTime - this.firstQueuedAt;
      if (this.queued >= this.jitterSecs * sampleRate || waited >= this.jitterSecs) {
        this.setPlaying(true);
      }
    }
    let written = 0;
    if (this.playing) written = this.drain(out);
    out.fill(0, written);
    for (let c = 1; c < output.length; c++) output[c].set(out);
    if (this.playing && this.queued === 0) {
      // Ran dry: wait for a jitter buffer's worth again, and time the next burst.
      this.setPlaying(false);
      this.firstQueuedAt = null;
      this.armed = true;
    }
    this.reportStats(false);
    return true;
  }

  drain(out) {
    let written = 0;
    let energy = 0;
    while (written < out.length && this.queue.length > 0) {
      const chunk = this.queue[0];
      const n = Math.min(out.length - written, chunk.length - this.head);
      for (let i = 0; i < n; i++) {
        const s = chunk[this.head + i];
        out[written + i] = s;
        energy += s * s;
      }
      written += n;
      this.head += n;
      if (this.head === chunk.length) {
        this.queue.shift();
        this.head = 0;
      }
    }
    this.queued -= written;
    this.played += written;
    if (this.armed && written > 0 && Math.sqrt(energy / written) >= AUDIBLE_RMS) {
      this.armed = false;
      this.port.postMessage({ type: "audible", t: currentTime });
    }
    return written;
  }

  reportStats(force) {
    if (!force && currentTime - this.lastStats < STATS_INTERVAL_SECS) return;
    this.lastStats = currentTime;
    const played = Math.round(this.toSource(this.played));
    const buffered = Math.round(this.toSource(this.queued));
    const key = `${played}/${buffered}`;
    if (!force && key === this.lastReported) return; // nothing new while idle
    this.lastReported = key;
    this.port.postMessage({ type: "stats", played, buffered });
  }
}

registerProcessor("aiop-playback", PlaybackProcessor);
