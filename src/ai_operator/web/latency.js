// Per-turn latency readout: voice-to-voice measured in the page, stage TTFBs from the server.
//
// Voice-to-voice is timed on the AudioContext clock, from the last 20 ms mic frame above
// the speech level before the server said the user stopped, to the first audible sample
// of the reply leaving the playback worklet (plus the context's reported output latency).
// STT, LLM and TTS are the first time-to-first-byte of each stage in the turn, from RTVI
// `metrics` or else the server's own `turn-metrics` message, which also brings endpointing
// (end of the user's speech to the end of their turn).

const HISTORY_ROWS = 5;
const STAGES = ["stt", "llm", "tts"];

/** 'LocalWhisperSTTService#0' -> 'stt'; null for processors that are not a stage. */
export function stageOf(processor) {
  const name = String(processor || "").toUpperCase();
  return STAGES.find((stage) => name.includes(stage.toUpperCase())) || null;
}

const fmtSecs = (secs) => (secs == null ? "—" : `${secs.toFixed(secs < 10 ? 2 : 1)} s`);

export class LatencyBoard {
  constructor(latestNode, historyBody) {
    this.latestNode = latestNode;
    this.historyBody = historyBody;
    this.turns = [];
    this.current = null;
  }

  /** A user turn begins, unless the current one has not been answered yet. */
  startTurn() {
    if (this.current && !this.current.replied) return this.current;
    this.current = {
      n: this.turns.length + 1,
      replied: false,
      voiceToVoiceMs: null,
      ttfb: { stt: null, llm: null, tts: null },
      endpointing: null,
      serverVoiceToVoice: null,
    };
    this.turns.push(this.current);
    this.render();
    return this.current;
  }

  replied() {
    if (this.current) this.current.replied = true;
  }

  /** RTVI metrics data: {ttfb: [{processor, value}], ...}. */
  metrics(data) {
    if (!this.current || !data || !Array.isArray(data.ttfb)) return;
    let changed = false;
    for (const item of data.ttfb) {
      const stage = stageOf(item.processor);
      if (stage && this.current.ttfb[stage] == null && typeof item.value === "number") {
        this.current.ttfb[stage] = item.value;
        changed = true;
      }
    }
    if (changed) this.render();
  }

  voiceToVoice(ms) {
    if (!this.current || this.current.voiceToVoiceMs != null) return;
    this.current.voiceToVoiceMs = ms;
    this.render();
  }

  /** The server's `turn-metrics` notice: {voice_to_voice, endpointing, stt, llm, tts} in s. */
  serverTurn(data) {
    const turn = this.current;
    if (!turn) return;
    if (typeof data.endpointing === "number") turn.endpointing = data.endpointing;
    if (typeof data.voice_to_voice === "number") turn.serverVoiceToVoice = data.voice_to_voice;
    for (const stage of STAGES) {
      if (turn.ttfb[stage] == null && typeof data[stage] === "number") turn.ttfb[stage] = data[stage];
    }
    this.render();
  }

  render() {
    const latest = [...this.turns].reverse().find((t) => t.voiceToVoiceMs != null) || this.current;
    this.renderLatest(latest);
    this.renderHistory();
  }

  renderLatest(turn) {
    const rows = [
      ["Voice-to-voice", turn && turn.voiceToVoiceMs != null ? turn.voiceToVoiceMs / 1000 : null, "v2v"],
      ["End of turn", turn && turn.endpointing, "eot"],
      ["Speech-to-text", turn && turn.ttfb.stt, "stt"],
      ["LLM first token", turn && turn.ttfb.llm, "llm"],
      ["TTS first audio", turn && turn.ttfb.tts, "tts"],
    ];
    const nodes = [];
    for (const [label, secs, key] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = fmtSecs(secs);
      dd.dataset.stage = key;
      nodes.push(dt, dd);
    }
    this.latestNode.replaceChildren(...nodes);
  }

  renderHistory() {
    const rows = this.turns.slice(-HISTORY_ROWS).reverse().map((turn) => {
      const tr = document.createElement("tr");
      const cells = [
        `${turn.n}`,
        fmtSecs(turn.voiceToVoiceMs != null ? turn.voiceToVoiceMs / 1000 : null),
        fmtSecs(turn.endpointing),
        fmtSecs(turn.ttfb.stt),
        fmtSecs(turn.ttfb.llm),
        fmtSecs(turn.ttfb.tts),
      ];
      cells.forEach((text, i) => {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        cell.textContent = text;
        tr.append(cell);
      });
      return tr;
    });
    this.historyBody.replaceChildren(...rows);
  }
}
