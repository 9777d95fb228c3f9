// One call: the microphone, the bot's voice, and the socket to /ws (opened again after a drop).
//
// A Call owns the audio engine and the current Connection and follows who has the floor
// from the server's RTVI events. It outlives its socket: when the socket drops, the
// microphone keeps running and a new socket is opened with backoff (reconnect.js). What
// the person sees goes through `view` (app.js): the transcript, latency readout, notices,
// status cue, alerts and counters.

import { AudioEngine, MicrophoneError, WIRE_SAMPLE_RATE } from "./audio.js";
import { ConnState, Connection, describeClose, describeDrop } from "./connection.js";
import { describeServerMessage } from "./notices.js";
import {
  clientReady,
  encodeAudioFrame,
  encodeMessageFrame,
  isRtvi,
  monoPcm16,
} from "./protocol.js";
import { Backoff, MAX_ATTEMPTS, isDrop, mayRetry } from "./reconnect.js";
import { Indicator } from "./status.js";

// A 20 ms mic frame at least this loud (RMS of -1..1 samples, about -40 dBFS) is speech,
// for timing where the user stopped.
const SPEECH_RMS = 0.01;
// Speech older than this when the server ends the turn does not anchor the latency.
const MAX_ANCHOR_AGE_SECS = 10;

export class Call {
  /**
   * view: {transcript, latency, notices, status, stats, hook, alert(text, kind),
   *        clearAlert(), render(), meter(rms), ended(call)}
   */
  constructor(view, wsUrl) {
    this.view = view;
    this.wsUrl = wsUrl;
    this.engine = null;
    this.conn = null;
    this.ready = false;
    this.userSpeaking = false;
    this.botSpeaking = false;
    this.awaitingReply = false;
    this.playing = false;
    this.muted = false;
    this.lastSpeechT = null;
    this.pendingAnchor = null;
    this.cutOff = false; // this bot turn was interrupted already
    this.over = false;
    this.backoff = new Backoff();
    this.reconnecting = false;
    this.retryTimer = null;
  }

  get indicator() {
    if (this.reconnecting) return Indicator.RECONNECTING;
    if (!this.ready) return Indicator.CONNECTING;
    if (this.userSpeaking) return Indicator.USER_SPEAKING;
    if (this.botSpeaking || this.playing) return Indicator.BOT_SPEAKING;
    if (this.awaitingReply) return Indicator.THINKING;
    return Indicator.LISTENING;
  }

  get connState() {
    return this.conn ? this.conn.state : ConnState.IDLE;
  }

  // --- lifecycle --------------------------------------------------------------------------

  /** Open the microphone, then the socket. {micId, speakerId, volume} as AudioEngine.start. */
  async start(audio) {
    let engine;
    try {
      engine = await AudioEngine.start({
        ...audio,
        onFrame: (frame) => this.onMicFrame(frame),
        onPlayback: (message) => this.onPlayback(message),
      });
    } catch (err) {
      if (this.over) return; // hung up meanwhile
      this.end(err instanceof MicrophoneError ? err.message : `Audio could not start: ${err.message || err}`);
      return;
    }
    if (this.over) {
      engine.close(); // hung up while the mic was opening
      return;
    }
    this.engine = engine;
    this.view.hook.sampleRate = engine.sampleRate;
    this.openSocket();
  }

  openSocket() {
    this.retryTimer = null;
    const conn = new Connection(this.wsUrl, {
      onOpen: () => {
        this.view.hook.sockets += 1;
        conn.send(encodeMessageFrame(clientReady()));
        this.view.render();
      },
      onFrame: (frame) => {
        if (!this.over && this.conn === conn) this.onServerFrame(frame);
      },
      onBadFrame: (err) => {
        this.view.stats.badFrames += 1;
        this.view.notices.add("error", `Unreadable message from the server: ${err.message}`);
      },
      onClose: (info) => this.onClosed(info),
    });
    this.conn = conn;
    conn.open();
    this.view.render();
  }

  /** The person hung up. */
  hangUp() {
    if (this.over) return;
    if (this.conn && this.conn.state !== ConnState.CLOSED) this.conn.close();
    this.end(null);
  }

  /** End the call; `alert` says why, when it was not the person's choice. */
  end(alert) {
    this.over = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.engine) this.engine.close().catch(() => {});
    this.engine = null;
    this.view.transcript.releaseBot();
    this.view.transcript.endLine();
    this.view.status.clearCue();
    this.view.hook.reconnect = null;
    if (alert) this.view.alert(alert);
    this.view.ended(this);
  }

  /** The socket is gone: nobody has the floor, and nothing queued should still play. */
  resetFloor() {
    this.ready = false;
    this.userSpeaking = false;
    this.botSpeaking = false;
    this.awaitingReply = false;
    this.pendingAnchor = null;
    if (this.engine) this.engine.flush();
    this.view.transcript.releaseBot();
    this.view.transcript.endLine();
  }

  onClosed(info) {
    if (this.over) return;
    this.resetFloor();
    const wasReconnecting = this.reconnecting;
    const retry = wasReconnecting ? mayRetry(info) : isDrop(info);
    const delayMs = retry ? this.backoff.next() : null;
    if (delayMs === null) {
      const gaveUp = retry ? ` Gave up after ${MAX_ATTEMPTS} attempts to reconnect.` : "";
      this.end(describeClose(info) + gaveUp);
      return;
    }
    if (!wasReconnecting) this.view.transcript.note("Connection lost — reconnecting…");
    this.reconnecting = true;
    const attempt = this.backoff.attempt;
    this.view.hook.reconnect = { attempt, delayMs };
    this.view.hook.reconnectDelays.push(delayMs);
    this.view.alert(
      `${describeDrop(info)} Reconnecting in ${(delayMs / 1000).toFixed(1)} s ` +
        `(attempt ${attempt} of ${MAX_ATTEMPTS})…`,
      "warn"
    );
    this.retryTimer = setTimeout(() => {
      if (!this.over) this.openSocket();
    }, delayMs);
    this.view.render();
  }

  onBotReady() {
    this.ready = true;
    this.view.hook.botReady = true;
    if (!this.reconnecting) return;
    this.reconnecting = false;
    this.backoff.reset();
    this.view.hook.reconnect = null;
    this.view.hook.reconnects += 1;
    this.view.clearAlert();
    this.view.transcript.note("Reconnected — a new conversation has started.");
    this.view.notices.add("info", "Reconnected to the server after the connection dropped.");
  }

  // --- controls ---------------------------------------------------------------------------

  toggleMute() {
    if (!this.engine) return;
    this.muted = !this.muted;
    this.engine.setMuted(this.muted);
    this.view.render();
  }

  // --- audio in and out -------------------------------------------------------------------

  onMicFrame({ pcm, rms, t }) {
    if (this.over) return;
    if (rms >= SPEECH_RMS && !this.muted) this.lastSpeechT = t;
    this.view.meter(rms);
    if (this.conn && this.conn.isOpen) {
      this.conn.send(encodeAudioFrame(new Uint8Array(pcm), WIRE_SAMPLE_RATE, 1));
      this.view.stats.audioFramesSent += 1;
    }
  }

  onPlayback(message) {
    if (this.over) return;
    const { stats } = this.view;
    switch (message.type) {
      case "stats":
        stats.audioSamplesPlayed = message.played;
        stats.audioSamplesBuffered = message.buffered;
        break;
      case "flushed":
        stats.audioSamplesDropped += message.dropped;
        break;
      case "playing":
        this.playing = message.playing;
        if (message.playing) this.view.transcript.releaseBot(); // its voice is heard: its words too
        this.view.render();
        break;
      case "audible":
        if (this.pendingAnchor != null && message.t >= this.pendingAnchor) {
          const secs = message.t + this.engine.outputLatency - this.pendingAnchor;
          this.view.latency.voiceToVoice(Math.round(secs * 1000));
          this.pendingAnchor = null;
        }
        break;
      default:
        break;
    }
  }

  /** Barge-in: drop the bot audio not yet played, mark the reply cut off, flash the cue. */
  bargeIn() {
    const speaking = this.botSpeaking || this.playing;
    this.engine.flush();
    this.view.stats.flushes += 1;
    const cut = this.view.transcript.botInterrupted(speaking);
    if ((cut || speaking) && !this.cutOff) {
      this.cutOff = true;
      this.view.status.flashInterrupted();
      this.view.hook.interruptCues += 1;
    }
  }

  // --- what the server says ---------------------------------------------------------------

  onServerFrame(frame) {
    const { stats } = this.view;
    switch (frame.kind) {
      case "audio": {
        const mono = monoPcm16(frame.audio, frame.numChannels);
        stats.audioChunksReceived += 1;
        stats.audioSamplesReceived += mono.byteLength >> 1;
        this.engine.play(mono, frame.sampleRate || WIRE_SAMPLE_RATE);
        break;
      }
      case "interruption":
        stats.interruptions += 1;
        this.bargeIn();
        break;
      case "message":
        if (isRtvi(frame.message)) this.onRtvi(frame.message);
        break;
      default:
        break; // text and transcription frames carry nothing the page shows
    }
  }

  onRtvi({ type, data }) {
    const { transcript, latency, notices } = this.view;
    switch (type) {
      case "bot-ready":
        this.onBotReady();
        break;
      case "user-started-speaking":
        this.userSpeaking = true;
        if (this.botSpeaking || this.playing) this.bargeIn();
        latency.startTurn();
        break;
      case "user-stopped-speaking": {
        this.userSpeaking = false;
        this.awaitingReply = true;
        const now = this.engine.now;
        const recent = this.lastSpeechT != null && now - this.lastSpeechT < MAX_ANCHOR_AGE_SECS;
        this.pendingAnchor = recent ? this.lastSpeechT : now;
        break;
      }
      case "user-transcription":
        if (data) transcript.userTranscription(data.text, Boolean(data.final));
        break;
      case "bot-started-speaking":
        this.botSpeaking = true;
        this.awaitingReply = false;
        this.cutOff = false;
        if (!this.playing) transcript.holdBot(); // its words wait for its voice
        latency.replied();
        break;
      case "bot-stopped-speaking":
        this.botSpeaking = false;
        transcript.releaseBot();
        break;
      case "bot-output":
        transcript.botOutput(data);
        break;
      case "bot-tts-text":
        if (data) transcript.botTtsText(data.text);
        break;
      case "bot-interrupted":
        this.bargeIn();
        break;
      case "metrics":
        latency.metrics(data);
        break;
      case "error":
      case "error-response":
        this.onServerError(data || {});
        break;
      case "server-message":
        if (data && data.type === "turn-metrics") latency.serverTurn(data);
        else notices.add("info", describeServerMessage(data));
        break;
      default:
        return; // bot-llm-text, bot-tts-started, user-input, ...: nothing to show
    }
    this.view.render();
  }

  onServerError(data) {
    const text = data.error || data.message || "unknown error";
    if (data.fatal) {
      // The alert says why; the close that follows adds nothing.
      if (this.conn) this.conn.close();
      this.end(`The server ended the conversation: ${text}`);
    } else {
      this.awaitingReply = false; // a failed stage answers nothing (the bot may apologise)
      this.view.notices.add("error", `Server error: ${text}`);
    }
  }
}
