// When and how soon to reconnect after the socket drops.
//
// A dropped socket (network blip, server restart) is retried with exponential backoff and
// jitter, keeping the microphone and the transcript. A close the server meant is not: the
// conversation ended (1000), this client broke its limits (1008), the server is full (1013),
// or an application refusal (4000-4999). Neither is a socket that never opened on the first
// try: the server is not there, and saying so beats retrying in silence.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 8000;
export const MAX_ATTEMPTS = 6;
const NO_RETRY_CODES = new Set([1000, 1008, 1013]);

/** Whether a close of a socket that had opened is worth reconnecting after. */
export function isDrop({ code, wasOpen }) {
  return wasOpen && !NO_RETRY_CODES.has(code) && !(code >= 4000 && code < 5000);
}

/** Whether a close seen while reconnecting still allows another try. */
export function mayRetry({ code, wasOpen }) {
  return !wasOpen || isDrop({ code, wasOpen });
}

export class Backoff {
  constructor({ firstMs = FIRST_DELAY_MS, maxMs = MAX_DELAY_MS, attempts = MAX_ATTEMPTS } = {}) {
    this.firstMs = firstMs;
    this.maxMs = maxMs;
    this.attempts = attempts;
    this.attempt = 0;
  }

  /** The delay before the next attempt, in ms (half fixed, half random), or null: give up. */
  next() {
    if (this.attempt >= this.attempts) return null;
    const ceiling = Math.min(this.maxMs, this.firstMs * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  reset() {
    this.attempt = 0;
  }
}
