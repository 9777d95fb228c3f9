// The live transcript: the user's words as Whisper hears them, the bot's as they are spoken.
//
// Each line is one side's turn. `entries` mirrors the lines as plain data
// ({speaker, text, interim, final, interrupted}) for the test hook in app.js.

const NEAR_BOTTOM_PX = 48;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const join = (parts) => parts.filter(Boolean).join(" ").replace(/\s+/g, " ").trim();

export class Transcript {
  constructor(list, scroller) {
    this.list = list;
    this.scroller = scroller;
    this.entries = [];
    this.current = null; // the latest line: {entry, node, ...}
    this.botOutputSeen = false; // once bot-output arrives, bot-tts-text is redundant
  }

  clear() {
    this.list.replaceChildren();
    this.entries.length = 0;
    this.current = null;
  }

  line(speaker) {
    if (this.current && this.current.entry.speaker === speaker && !this.current.closed) {
      return this.current;
    }
    const entry = { speaker, text: "", interim: "", final: false, interrupted: false };
    const node = el("li", `line ${speaker}`);
    node.append(el("span", "who", speaker === "user" ? "You" : "Operator"));
    const body = el("p", "text");
    node.append(body);
    const line = { entry, node, body, finals: [], interim: "", segments: new Map(), closed: false };
    this.entries.push(entry);
    this.current = line;
    const stick = this.nearBottom();
    this.list.append(node);
    if (stick) this.scrollToEnd();
    return line;
  }

  /** Close the latest line, so the next words of that speaker start a new one. */
  endLine() {
    if (this.current) this.current.closed = true;
  }

  // --- the user -------------------------------------------------------------------------

  userTranscription(text, final) {
    const words = (text || "").trim();
    if (!words) return;
    const line = this.line("user");
    if (final) {
      line.finals.push(words);
      line.interim = "";
    } else {
      line.interim = words;
    }
    line.entry.text = join(line.finals);
    line.entry.interim = line.interim;
    line.entry.final = line.interim === "";
    const interim = line.interim ? el("span", "interim", ` ${line.interim}`) : "";
    this.render(line, [el("span", "final", line.entry.text), interim]);
  }

  // --- the bot --------------------------------------------------------------------------

  /** RTVI bot-output: a segment of the reply, with what of it has been spoken so far. */
  botOutput(data) {
    const text = (data && data.text) || "";
    if (!text.trim()) return;
    this.botOutputSeen = true;
    const line = this.line("bot");
    const id = data.segment_id ?? `n${line.segments.size}`;
    const segment = line.segments.get(id) || { spoken: "", pending: "", cut: false };
    const progress = data.spoken_progress;
    if (data.will_be_spoken === false || data.spoken_status === undefined) {
      segment.spoken = text; // text that is not spoken, or a server that does not say
      segment.pending = "";
    } else if (progress) {
      segment.spoken = progress.accumulated_text || "";
      segment.pending = progress.remaining_text || "";
    } else if (data.spoken_status === "completed") {
      segment.spoken = text;
      segment.pending = "";
    } else {
      segment.spoken = "";
      segment.pending = text;
    }
    line.segments.set(id, segment);
    this.renderBot(line);
  }

  /** RTVI bot-tts-text: only used when the server sends no bot-output. */
  botTtsText(text) {
    if (this.botOutputSeen || !(text || "").trim()) return;
    const line = this.line("bot");
    line.segments.set(`t${line.segments.size}`, { spoken: text, pending: "", cut: false });
    this.renderBot(line);
  }

  /**
   * An interruption reached the page. If the bot was mid-reply, its line is marked and the
   * words it had not spoken yet are struck out; otherwise nothing was cut off.
   */
  botInterrupted(botWasSpeaking) {
    const line = this.current;
    if (!line || line.entry.speaker !== "bot" || line.closed) return;
    const pending = [...line.segments.values()].filter((segment) => segment.pending);
    if (!botWasSpeaking && pending.length === 0) return;
    for (const segment of pending) segment.cut = true;
    line.entry.interrupted = true;
    line.node.classList.add("interrupted");
    line.node.querySelector(".who").append(el("span", "badge", "interrupted"));
    this.renderBot(line);
    line.closed = true;
  }

  renderBot(line) {
    const parts = [];
    const spoken = [];
    for (const segment of line.segments.values()) {
      const span = el("span", "segment");
      if (segment.spoken) span.append(el("span", "spoken", segment.spoken));
      if (segment.pending) {
        const pending = el("span", segment.cut ? "cut" : "pending", segment.pending);
        span.append(segment.spoken ? " " : "", pending);
      }
      parts.push(span, " ");
      spoken.push(segment.spoken);
    }
    line.entry.text = join(spoken);
    this.render(line, parts);
  }

  render(line, parts) {
    const stick = this.nearBottom();
    line.body.replaceChildren(...parts.filter((p) => p !== ""));
    if (stick) this.scrollToEnd();
  }

  nearBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToEnd() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}
