// The status pill: which side has the floor, in words, colour and a `data-state` attribute.
//
// The state is derived from the call (see `indicatorOf` in app.js); this module only shows
// it. A barge-in also flashes a short "Interrupted" cue on the pill, so the person sees that
// the bot heard them and stopped.

export const Indicator = Object.freeze({
  DISCONNECTED: "disconnected",
  CONNECTING: "connecting",
  RECONNECTING: "reconnecting",
  LISTENING: "listening",
  USER_SPEAKING: "user-speaking",
  THINKING: "thinking",
  BOT_SPEAKING: "bot-speaking",
});

const TEXT = {
  [Indicator.DISCONNECTED]: "Disconnected",
  [Indicator.CONNECTING]: "Connecting…",
  [Indicator.RECONNECTING]: "Reconnecting…",
  [Indicator.LISTENING]: "Listening",
  [Indicator.USER_SPEAKING]: "You're speaking",
  [Indicator.THINKING]: "Thinking…",
  [Indicator.BOT_SPEAKING]: "Operator speaking",
};

// How long the "Interrupted" cue stays on the pill.
const CUE_MS = 1600;

export class StatusView {
  constructor(pill, textNode, cueNode) {
    this.pill = pill;
    this.textNode = textNode;
    this.cueNode = cueNode;
    this.cueTimer = null;
  }

  show(state, { muted }) {
    this.pill.dataset.state = state;
    this.textNode.textContent = TEXT[state] + (muted ? " · muted" : "");
  }

  /** The bot was cut off mid-reply: flash the cue (restarting it if it is still showing). */
  flashInterrupted() {
    clearTimeout(this.cueTimer);
    this.pill.dataset.cue = "";
    void this.pill.offsetWidth; // restart the CSS animation
    this.pill.dataset.cue = "interrupted";
    this.cueNode.hidden = false;
    this.cueTimer = setTimeout(() => this.clearCue(), CUE_MS);
  }

  clearCue() {
    clearTimeout(this.cueTimer);
    this.cueTimer = null;
    delete this.pill.dataset.cue;
    this.cueNode.hidden = true;
  }
}
