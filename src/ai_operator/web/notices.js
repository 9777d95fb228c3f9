// Server notices and non-fatal errors, newest first, in words a person can act on.

const MAX_NOTICES = 30;
const STAGE_NAMES = { stt: "speech-to-text", llm: "LLM", tts: "text-to-speech" };

/** A server-message payload, in words (see docs/protocol.md for the known types). */
export function describeServerMessage(data) {
  if (typeof data === "string") return data;
  if (!data || typeof data !== "object") return JSON.stringify(data);
  const { type, message, text, ...rest } = data;
  const stage = STAGE_NAMES[rest.stage] || rest.stage;
  if (type === "provider-failover") {
    const after = rest.permanent
      ? "for the rest of this conversation"
      : `for now${rest.retry_after_secs ? `; it is retried after ${rest.retry_after_secs} s` : ""}`;
    return (
      `The ${stage} provider "${rest.provider}" failed (${rest.reason || "no reason given"}); ` +
      `using the ${rest.fallback} ${stage} ${after}.`
    );
  }
  if (type === "provider-restored") {
    return `The ${stage} provider "${rest.provider}" is back in use.`;
  }
  const fields = Object.entries(rest)
    .map(([k, v]) => `${k.replace(/_/g, " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
  const head = type ? String(type).replace(/[-_]/g, " ") : "notice";
  return [head, message || text, fields].filter(Boolean).join(" — ");
}

export class Notices {
  constructor(list) {
    this.list = list;
    this.entries = []; // {kind: "info"|"error", text}, for the test hook
  }

  add(kind, text) {
    this.entries.push({ kind, text });
    const item = document.createElement("li");
    item.className = `notice ${kind}`;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    item.append(time, " ", text);
    this.list.prepend(item);
    while (this.list.children.length > MAX_NOTICES) this.list.lastElementChild.remove();
  }
}
