// One WebSocket to /ws: explicit states, decoded frames out, a readable reason on close.

import { ProtocolError, decodeFrame } from "./protocol.js";

export const ConnState = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  CLOSING: "closing",
  CLOSED: "closed",
});

const TRANSITIONS = {
  [ConnState.IDLE]: [ConnState.CONNECTING, ConnState.CLOSED],
  [ConnState.CONNECTING]: [ConnState.OPEN, ConnState.CLOSING, ConnState.CLOSED],
  [ConnState.OPEN]: [ConnState.CLOSING, ConnState.CLOSED],
  [ConnState.CLOSING]: [ConnState.CLOSED],
  [ConnState.CLOSED]: [],
};

// Close codes the server uses (see docs/protocol.md), in words.
const CLOSE_REASONS = {
  1000: "the conversation ended",
  1001: "the server is shutting down",
  1006: "the connection dropped",
  1008: "the server closed the connection: this client broke its limits",
  1011: "the server hit an internal error",
  1013: "the server is busy; try again in a moment",
};

/** The WebSocket URL: `?ws=` if given, else /ws next to this page; `?token=` is passed on. */
export function resolveWsUrl(location) {
  const params = new URLSearchParams(location.search);
  const base = location.href.replace(/[?#].*$/, "");
  const url = new URL(params.get("ws") || "ws", base);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  const token = params.get("token");
  if (token && !url.searchParams.has("token")) url.searchParams.set("token", token);
  return url.toString();
}

/** The URL as it may be shown: without the token. */
export function displayUrl(wsUrl) {
  const url = new URL(wsUrl);
  if (url.searchParams.has("token")) url.searchParams.set("token", "…");
  return url.toString();
}

/** Why a socket closed, for the person at the page. */
export function describeClose({ code, reason, wasOpen, url }) {
  if (!wasOpen) {
    return (
      `Could not reach the server at ${displayUrl(url)}. Check that it is running ` +
      "(ai-operator serve) and that this page may connect to it (origin, token)."
    );
  }
  const what = CLOSE_REASONS[code] || `the connection closed unexpectedly (code ${code})`;
  return `Disconnected: ${what}${reason ? ` — ${reason}` : ""}.`;
}

/** Why a call lost its socket, while the page tries again. */
export function describeDrop({ code, reason, wasOpen }) {
  if (!wasOpen) return "The server cannot be reached yet.";
  const what = CLOSE_REASONS[code] || `code ${code}`;
  return `The connection to the server was lost (${what}${reason ? ` — ${reason}` : ""}).`;
}

export class Connection {
  /**
   * handlers: onOpen(), onFrame(frame), onBadFrame(error), onClose({code, reason, wasOpen, url})
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.state = ConnState.IDLE;
    this.wasOpen = false;
    this.ws = null;
  }

  move(next) {
    if (!TRANSITIONS[this.state].includes(next)) {
      throw new Error(`connection: illegal transition ${this.state} -> ${next}`);
    }
    this.state = next;
  }

  open() {
    this.move(ConnState.CONNECTING);
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      // A malformed URL throws synchronously; report it like any failed connect.
      this.move(ConnState.CLOSED);
      queueMicrotask(() =>
        this.handlers.onClose({ code: 1006, reason: String(err.message), wasOpen: false, url: this.url })
      );
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      if (this.state !== ConnState.CONNECTING) return;
      this.move(ConnState.OPEN);
      this.wasOpen = true;
      this.handlers.onOpen();
    };
    ws.onmessage = (event) => this.receive(event.data);
    ws.onclose = (event) => {
      if (this.state === ConnState.CLOSED) return;
      this.move(ConnState.CLOSED);
      this.handlers.onClose({
        code: event.code,
        reason: event.reason,
        wasOpen: this.wasOpen,
        url: this.url,
      });
    };
    this.ws = ws;
  }

  receive(data) {
    if (typeof data === "string") {
      this.handlers.onBadFrame(new ProtocolError("expected binary frames, got a text message"));
      return;
    }
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.handlers.onBadFrame(err);
      return;
    }
    this.handlers.onFrame(frame);
  }

  get isOpen() {
    return this.state === ConnState.OPEN;
  }

  send(bytes) {
    if (this.isOpen) this.ws.send(bytes);
  }

  /** Close from our side; onClose still fires once the socket has closed. */
  close() {
    if (this.state === ConnState.CONNECTING || this.state === ConnState.OPEN) {
      this.move(ConnState.CLOSING);
      this.ws.close(1000, "client disconnected");
    }
  }
}
