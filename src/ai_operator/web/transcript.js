// The live transcript: the user's words as they are recognised, the bot's as they are heard.
//
// Each line is one side's turn. The bot's words are shown as they are spoken, never ahead
// of its voice: text that arrives before this page has started playing the reply is held
// (`holdBot`) until the audio starts (`releaseBot`), and words the server says are still
// to be spoken are not shown at all, unless an interruption cut them off, when they are
// struck out. `entries` mirrors the lines as plain data ({speaker, text, interim, final,
// interrupted, cut}) for the test hook in app.js.

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
    this.held = null; // bot text waiting for the bot's voice: [[method, arg], ...], or null
  }

  /** Hold the bot's words until its voice is heard. */
  holdBot() {
    if (!this.held) this.held = [];
  }

  /** The bot's voice is heard (or will not be): show the held words, stop holding. */
  releaseBot() {
    const held = this.held || [];
    this.held = null;
    for (const [method, arg] of held) this[method](arg);
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
    const entry = { speaker, text: "", interim: "", final: false, interrupted: false, cut: "" };
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

  /** A line of neither side: where the call lost its connection and where it resumed. */
  note(text) {
    const entry = { speaker: "note", text, interim: "", final: true, interrupted: false, cut: "" };
    const node = el("li", "line note", text);
    this.entries.push(entry);
    this.current = null;
    const stick = this.nearBottom();
    this.list.append(node);
    if (stick) this.scrollToEnd();
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
    if (this.held && data.will_be_spoken !== false) {
      this.held.push(["botOutput", data]);
      return;
    }
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
    if (this.held) {
      this.held.push(["botTtsText", text]);
      return;
    }
    const line = this.line("bot");
    line.segments.set(`t${line.segments.size}`, { spoken: text, pending: "", cut: false });
    this.renderBot(line);
  }

  /**
   * An interruption reached the page. If the bot was mid-reply, its line is marked and the
   * words it had not spoken yet are shown struck out; otherwise nothing was cut off.
   * Returns whether a reply was cut off.
   */
  botInterrupted(botWasSpeaking) {
    this.releaseBot();
    const line = this.current;
    if (!line || line.entry.speaker !== "bot" || line.closed) return false;
    const pending = [...line.segments.values()].filter((segment) => segment.pending);
    if (!botWasSpeaking && pending.length === 0) return false;
    for (const segment of pending) segment.cut = true;
    line.entry.interrupted = true;
    line.entry.cut = join(pending.map((segment) => segment.pending));
    line.node.classList.add("interrupted");
    line.node.querySelector(".who").append(" ", el("span", "badge", "interrupted"));
    this.renderBot(line);
    line.closed = true;
    return true;
  }

  renderBot(line) {
    const parts = [];
    const spoken = [];
    for (const segment of line.segments.values()) {
      const span = el("span", "segment");
      if (segment.spoken) span.append(el("span", "spoken", segment.spoken));
      if (segment.cut && segment.pending) {
        const cut = el("span", "cut", segment.pending);
        cut.title = "Not said: the reply was interrupted";
        span.append(segment.spoken ? " " : "", cut);
      }
      if (span.childNodes.length) parts.push(span, " ");
      spoken.push(segment.spoken);
    }
    line.entry.text = join(spoken);
    // The bot has the floor but no word of this segment has been said yet.
    if (parts.length === 0) parts.push(el("span", "typing", "…"));
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
