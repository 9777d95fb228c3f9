// Streaming sample-rate conversion for the audio worklets (mic -> 16 kHz, 16 kHz -> speaker).
//
// Windowed-sinc interpolation from a precomputed table of fractional phases: when
// downsampling the kernel is widened so it also low-pass filters below the new Nyquist
// rate (no aliasing of the mic's high band into the speech band Whisper listens to).
// `process()` allocates nothing, so it is safe to call on the audio thread.

// Kernel half-width in samples of the lower of the two rates.
const HALF_TAPS = 16;
// Fractional positions the table covers between two input samples.
const PHASES = 256;
// Passband edge as a fraction of the lower Nyquist rate.
const ROLLOFF = 0.9;

function blackman(x) {
  // x in [-1, 1]
  return 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
}

function buildTable(ratio) {
  // ratio = input samples per output sample; > 1 when downsampling.
  const widen = Math.max(1, ratio);
  const cutoff = (0.5 * ROLLOFF) / widen; // cycles per input sample
  const half = Math.ceil(HALF_TAPS * widen);
  const taps = 2 * half;
  const table = new Float32Array((PHASES + 1) * taps);
  for (let p = 0; p <= PHASES; p++) {
    const frac = p / PHASES;
    let sum = 0;
    for (let j = 0; j < taps; j++) {
      // Tap j weighs input sample (i0 - half + 1 + j) for an output at i0 + frac.
      const t = frac + half - 1 - j;
      const x = 2 * cutoff * t;
      const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
      const w = Math.abs(t) >= half ? 0 : blackman(t / half);
      const h = 2 * cutoff * sinc * w;
      table[p * taps + j] = h;
      sum += h;
    }
    for (let j = 0; j < taps; j++) table[p * taps + j] /= sum; // unity gain at DC
  }
  return { table, half, taps };
}

export class StreamResampler {
  /** `maxInput`: the most samples one `process()` call may be given. */
  constructor(inRate, outRate, maxInput = 4096) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate;
    this.passthrough = inRate === outRate;
    const { table, half, taps } = buildTable(this.step);
    this.table = table;
    this.half = half;
    this.taps = taps;
    this.buf = new Float32Array(maxInput + 2 * taps + 2);
    this.out = new Float32Array(Math.ceil((maxInput + 2 * taps) / this.step) + 2);
    this.maxInput = maxInput;
    this.reset();
  }

  /** Forget buffered history (after a flush, so old audio cannot leak into new). */
  reset() {
    this.buf.fill(0);
    this.len = this.half; // leading zeros: the first output lands on the first input sample
    this.pos = this.half;
  }

  /**
   * Convert the next block; returns a view of an internal buffer, valid until the next call.
   * The last `half` input samples are held back until more input arrives.
   */
  process(input) {
    if (this.passthrough) return input;
    if (input.length > this.maxInput) throw new RangeError("resampler input block too large");
    const { buf, table, taps, half, step } = this;
    buf.set(input, this.len);
    this.len += input.length;
    let n = 0;
    let x = this.pos;
    while (Math.floor(x) + half < this.len) {
      const i0 = Math.floor(x);
      const phase = Math.round((x - i0) * PHASES);
      const row = phase * taps;
      const first = i0 - half + 1;
      let acc = 0;
      for (let j = 0; j < taps; j++) acc += buf[first + j] * table[row + j];
      this.out[n++] = acc;
      x += step;
    }
    // Keep only the history the next output needs.
    const keepFrom = Math.max(0, Math.floor(x) - half + 1);
    buf.copyWithin(0, keepFrom, this.len);
    this.len -= keepFrom;
    this.pos = x - keepFrom;
    return this.out.subarray(0, n);
  }
}
