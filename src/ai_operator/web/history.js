// The history page: past conversations from the server's JSON API, one read as a transcript.
//
// GET api/conversations lists them (newest first); GET api/conversations/<id> gives one
// with its turns and the messages taken (docs/protocol.md, "History API"). The conversation
// shown is the one named in the URL, `history#<id>` or `history?id=<id>`, so it can be
// linked to and the back button works. `window.__aiopHistory` reports what the page has
// loaded, for the end-to-end test (tests/e2e/test_history_page.py).

const STAGES = [
  ["voice_to_voice", "Voice-to-voice", "V2V"],
  ["endpointing", "End of turn", "EOT"],
  ["stt", "Speech-to-text", "STT"],
  ["llm", "LLM first token", "LLM"],
  ["tts", "TTS first audio", "TTS"],
];
const PROVIDER_ORDER = ["stt", "llm", "tts"];
const PHONE_NUMBER = /^\+?[\d\s().-]{6,}$/;

const $ = (id) => document.getElementById(id);
const ui = {
  alert: $("alert"),
  refresh: $("refresh"),
  list: $("convos"),
  listCount: $("list-count"),
  listEmpty: $("list-empty"),
  detailEmpty: $("detail-empty"),
  detailBody: $("detail-body"),
  title: $("detail-title"),
  meta: $("detail-meta"),
  messagesSection: $("messages-section"),
  messages: $("messages"),
  recordingSection: $("recording-section"),
  recording: $("recording"),
  turns: $("turns"),
  turnsEmpty: $("turns-empty"),
  talkLink: $("talk-link"),
  back: $("back"),
};

const params = new URLSearchParams(window.location.search);
const token = params.get("token");

// Read by the end-to-end test; never written by it.
const hook = { listed: null, shown: null, errors: [] };
window.__aiopHistory = hook;

// --- formatting ---------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

const when = (secs) =>
  new Date(secs * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });

const clock = (secs) => new Date(secs * 1000).toLocaleTimeString();

/** 75 -> "1 min 15 s"; null -> "not ended". */
function duration(secs) {
  if (secs == null || !Number.isFinite(secs)) return "not ended";
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
}

/** Seconds into the conversation, as m:ss. */
function offset(secs) {
  const s = Math.max(0, Math.floor(secs));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

const fmtSecs = (secs) => `${secs.toFixed(secs < 10 ? 2 : 1)} s`;

function providersText(providers) {
  const entries = Object.entries(providers || {});
  entries.sort(([a], [b]) => {
    const ia = PROVIDER_ORDER.indexOf(a);
    const ib = PROVIDER_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  });
  return entries.map(([stage, name]) => `${stage.toUpperCase()} ${name}`).join(" · ") || "—";
}

function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

// --- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function getJson(path) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(
      `Could not reach the server (${err.message || err}). Check that it is running (ai-operator serve).`,
      0
    );
  }
  if (!response.ok) {
    throw new ApiError(`The server answered HTTP ${response.status} for ${path}.`, response.status);
  }
  try {
    return await response.json();
  } catch {
    throw new ApiError(`The server's answer for ${path} is not JSON.`, response.status);
  }
}

function showAlert(text) {
  hook.errors.push(text);
  ui.alert.textContent = text;
  ui.alert.hidden = false;
}

function clearAlert() {
  ui.alert.hidden = true;
  ui.alert.textContent = "";
}

// --- the list -----------------------------------------------------------------------------

let conversations = [];

function selectedId() {
  const hash = decodeURIComponent(window.location.hash.slice(1));
  return hash || params.get("id") || null;
}

function convoLink(id) {
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `history${query}#${encodeURIComponent(id)}`;
}

function renderList() {
  const current = selectedId();
  const items = conversations.map((c) => {
    const a = el("a", "convo");
    a.href = convoLink(c.id);
    a.dataset.id = c.id;
    if (c.id === current) a.setAttribute("aria-current", "true");
    const top = el("span", "convo-top");
    const started = el("time", "convo-when", when(c.started_at));
    started.dateTime = new Date(c.started_at * 1000).toISOString();
    top.append(started, el("span", "chip", c.transport || "?"));
    const said = c.first_user_text ? `“${c.first_user_text}”` : "No words from the caller";
    const facts = [
      duration(c.ended_at == null ? null : c.ended_at - c.started_at),
      `${c.turns} turn${c.turns === 1 ? "" : "s"}`,
    ];
    a.append(
      top,
      el("span", c.first_user_text ? "convo-said" : "convo-said none", said),
      el("span", "convo-facts", facts.join(" · "))
    );
    const li = el("li");
    li.append(a);
    return li;
  });
  ui.list.replaceChildren(...items);
  ui.listEmpty.hidden = conversations.length > 0;
  ui.listCount.textContent = conversations.length ? `${conversations.length}` : "";
}

async function loadList() {
  try {
    const data = await getJson("api/conversations");
    if (!Array.isArray(data)) throw new ApiError("The conversation list is not a list.", 200);
    conversations = data;
    hook.listed = data.length;
    renderList();
  } catch (err) {
    showAlert(
      err.status === 404
        ? "Conversation history is not available on this server (HTTP 404 for api/conversations)."
        : err.message
    );
  }
}

// --- one conversation ---------------------------------------------------------------------

function metaRow(label, value) {
  return [el("dt", null, label), el("dd", null, value)];
}

function renderMeta(c) {
  const bot = c.turns.filter((t) => t.speaker === "bot");
  const v2v = bot.map((t) => t.latencies && t.latencies.voice_to_voice).filter(Number.isFinite);
  const cut = bot.filter((t) => t.interrupted).length;
  const med = median(v2v);
  ui.title.textContent = when(c.started_at);
  ui.meta.replaceChildren(
    ...metaRow("Duration", duration(c.ended_at == null ? null : c.ended_at - c.started_at)),
    ...metaRow("Transport", c.transport || "—"),
    ...metaRow("Providers", providersText(c.providers)),
    ...metaRow("Turns", `${c.turns.length} (${cut} interrupted)`),
    ...metaRow("Median voice-to-voice", med == null ? "—" : fmtSecs(med)),
    ...metaRow("Id", c.id)
  );
}

/** The player, when the server recorded this conversation (`recording` is its URL). */
function renderRecording(c) {
  ui.recordingSection.hidden = !c.recording;
  if (!c.recording) {
    ui.recording.pause();
    ui.recording.removeAttribute("src");
    ui.recording.load(); // drops the previous conversation's audio
    return;
  }
  // Same-origin relative path like the other calls; an <audio> can't send headers.
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  ui.recording.src = `api/conversations/${encodeURIComponent(c.id)}/recording${query}`;
}

function renderMessages(messages) {
  ui.messagesSection.hidden = messages.length === 0;
  ui.messages.replaceChildren(
    ...messages.map((m) => {
      const li = el("li", "message");
      const head = el("p", "message-head");
      head.append(el("strong", null, m.caller_name || "Unknown caller"));
      if (m.callback) {
        const number = m.callback.trim();
        let back;
        if (PHONE_NUMBER.test(number)) {
          back = el("a", "callback", number);
          back.href = `tel:${number.replace(/[^\d+]/g, "")}`;
        } else {
          back = el("span", "callback", number);
        }
        head.append(" · call back ", back);
      }
      const time = el("time", "message-time", clock(m.created_at));
      time.dateTime = new Date(m.created_at * 1000).toISOString();
      head.append(time);
      li.append(head, el("p", "message-body", m.body));
      return li;
    })
  );
}

function latencyChips(latencies) {
  const chips = STAGES.filter(([key]) => Number.isFinite(latencies[key])).map(([key, title, abbr]) => {
    const chip = el("span", `lat lat-${key}`);
    chip.title = title;
    chip.dataset.stage = key;
    chip.append(el("span", "lat-name", abbr), " ", el("span", "lat-value", fmtSecs(latencies[key])));
    return chip;
  });
  if (chips.length === 0) return null;
  const row = el("p", "latencies");
  row.setAttribute("aria-label", "Latency");
  row.append(...chips);
  return row;
}

function renderTurns(c) {
  ui.turns.replaceChildren(
    ...c.turns.map((t) => {
      const li = el("li", `line ${t.speaker === "user" ? "user" : "bot"}`);
      const who = el("span", "who", t.speaker === "user" ? "Caller" : "Operator");
      who.append(" ", el("span", "at", offset(t.started_at - c.started_at)));
      li.append(who);
      const text = el("p", "text", t.text);
      if (t.interrupted) {
        li.classList.add("interrupted");
        who.append(" ", el("span", "badge", "interrupted"));
        text.append(el("span", "cut-mark", " — cut off"));
      }
      li.append(text);
      const chips = t.speaker === "bot" ? latencyChips(t.latencies || {}) : null;
      if (chips) li.append(chips);
      return li;
    })
  );
  ui.turnsEmpty.hidden = c.turns.length > 0;
}

let showing = 0; // the latest load wins when the person clicks quickly

async function show(id) {
  for (const a of ui.list.querySelectorAll("a.convo")) {
    if (a.dataset.id === id) a.setAttribute("aria-current", "true");
    else a.removeAttribute("aria-current");
  }
  document.body.dataset.view = id ? "detail" : "list";
  if (!id) {
    ui.detailBody.hidden = true;
    ui.detailEmpty.hidden = false;
    hook.shown = null;
    return;
  }
  const mine = ++showing;
  let c;
  try {
    c = await getJson(`api/conversations/${encodeURIComponent(id)}`);
  } catch (err) {
    if (mine !== showing) return;
    ui.detailBody.hidden = true;
    ui.detailEmpty.hidden = false;
    showAlert(err.status === 404 ? `There is no conversation with id “${id}”.` : err.message);
    return;
  }
  if (mine !== showing) return;
  c.turns = Array.isArray(c.turns) ? c.turns : [];
  c.messages = Array.isArray(c.messages) ? c.messages : [];
  renderMeta(c);
  renderRecording(c);
  renderMessages(c.messages);
  renderTurns(c);
  ui.detailEmpty.hidden = true;
  ui.detailBody.hidden = false;
  hook.shown = c.id;
}

// --- wiring -------------------------------------------------------------------------------

async function refresh() {
  clearAlert();
  await loadList();
  await show(selectedId());
}

if (token) {
  ui.talkLink.href = `./?token=${encodeURIComponent(token)}`;
  ui.back.href = `history?token=${encodeURIComponent(token)}`;
}
ui.refresh.addEventListener("click", refresh);
window.addEventListener("hashchange", () => {
  clearAlert();
  show(selectedId());
});
refresh();
