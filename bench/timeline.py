"""Turning what the client received (a timeline of events) into latencies. Pure functions.

The client stamps every message with `time.monotonic()` on arrival; the microphone stamps
every frame it sends. A turn is measured from the send time of the frame that carried the
caller's last speech sample (`speech_end`) to the first audible bot audio after it, and is
split into stages from the RTVI events and Pipecat `metrics` messages:

    endpoint   end of speech -> user-stopped-speaking, minus the STT time inside it
               (VAD stop + turn detection waiting for the caller to be done)
    stt        the STT processor's processing time (Whisper running on the segment)
    llm        the LLM processor's TTFB (request -> first token)
    phrase     first token -> first text handed to TTS (bot-tts-started): sentence/phrase
               aggregation waiting for enough words to speak
    tts        the TTS processor's TTFB (text -> first audio)
    silence    first bot audio chunk -> first *audible* one (leading silence in the voice)
    transport  the rest: queues between processors, audio pacing, the WebSocket
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ai_operator.audio import AUDIBLE_RMS, rms_int16

STAGES: tuple[str, ...] = ("endpoint", "stt", "llm", "phrase", "tts", "silence", "transport")

# A processor's metrics message can arrive just after the audio it describes.
METRICS_GRACE_SECS = 0.25
# Without an interruption, a pause this long in the bot's audio means it stopped talking.
AUDIO_STOP_GAP_SECS = 0.3


class EventLike(Protocol):
    t: float
    kind: str
    data: Any


@dataclass
class TurnTiming:
    """One measured turn. Seconds; None where the server did not report the stage."""

    question: str
    transcript: str = ""
    voice_to_voice: float | None = None
    stages: dict[str, float | None] = field(default_factory=dict)
    stt_ttfb: float | None = None  # Pipecat's own end-of-speech -> transcript estimate
    # The reply's first phrase as handed to the TTS: its length drives the phrase and tts
    # stages, and the replies differ from run to run.
    first_phrase: str = ""
    early_response: bool = False  # the bot started speaking before the caller finished
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def first_audible(events: Sequence[EventLike], after: float) -> float | None:
    """Arrival time of the first audible bot audio chunk at or after `after`."""
    for e in events:
        if e.kind == "audio" and e.t >= after and rms_int16(e.data) >= AUDIBLE_RMS:
            return e.t
    return None


def first_phrase(events: Iterable[EventLike], after: float, before: float) -> str:
    """Text of the first RTVI `bot-output` segment to be spoken between `after` and
    `before`: the first phrase the TTS was given."""
    for e in events:
        if e.kind != "bot-output" or not (after <= e.t <= before) or not isinstance(e.data, dict):
            continue
        if e.data.get("will_be_spoken", True) and not e.data.get("spoken", False):
            return str(e.data.get("text", "")).strip()
    return ""


def _first(events: Iterable[EventLike], kind: str, after: float, before: float) -> float | None:
    return next((e.t for e in events if e.kind == kind and after <= e.t <= before), None)


def _last(events: Iterable[EventLike], kind: str, after: float, before: float) -> float | None:
    times = [e.t for e in events if e.kind == kind and after <= e.t <= before]
    return times[-1] if times else None


def metric_values(
    events: Iterable[EventLike],
    metric: str,
    stage: str,
    after: float,
    before: float,
    key: str = "value",
) -> list[tuple[float, float]]:
    """(arrival time, entry[key]) of each `metric` ("ttfb", "processing", "ttfa") reported by
    a processor whose name contains `stage` ("STT", "LLM", "TTS") between `after` and
    `before`."""
    found: list[tuple[float, float]] = []
    for e in events:
        if e.kind != "metrics" or not (after <= e.t <= before) or not isinstance(e.data, dict):
            continue
        for entry in e.data.get(metric) or []:
            if stage in str(entry.get("processor", "")) and key in entry:
                found.append((e.t, float(entry[key])))
    return found


def analyse_turn(
    events: Sequence[EventLike],
    question: str,
    speech_start: float,
    speech_end: float,
) -> TurnTiming:
    """Measure one turn from the events received after the caller started speaking."""
    turn = TurnTiming(question=question)
    audio_at = first_audible(events, speech_end)
    if audio_at is None:
        turn.error = "no bot audio after the question"
        return turn
    turn.voice_to_voice = audio_at - speech_end
    turn.early_response = (
        _first(events, "bot-started-speaking", speech_start, speech_end) is not None
    )
    turn.transcript = " ".join(
        str(e.data.get("text", "")).strip()
        for e in events
        if e.kind == "user-transcription"
        and speech_start <= e.t <= audio_at
        and isinstance(e.data, dict)
    ).strip()

    stopped = _last(events, "user-stopped-speaking", speech_start, audio_at)
    stt = metric_values(events, "processing", "STT", speech_start, audio_at)
    stt_ttfb = metric_values(events, "ttfb", "STT", speech_start, audio_at)
    turn.stt_ttfb = stt_ttfb[-1][1] if stt_ttfb else None
    llm_start = _first(events, "bot-llm-started", stopped or speech_end, audio_at)
    llm = metric_values(events, "ttfb", "LLM", llm_start or speech_end, audio_at)
    tts_start = _first(events, "bot-tts-started", llm_start or speech_end, audio_at)
    tts_after = tts_start or speech_end
    tts = metric_values(events, "ttfb", "TTS", tts_after, audio_at + METRICS_GRACE_SECS)
    first_chunk = _first(events, "audio", tts_after, audio_at)
    turn.first_phrase = first_phrase(events, tts_after, audio_at + METRICS_GRACE_SECS)

    stages: dict[str, float | None] = dict.fromkeys(STAGES)
    stages["stt"] = stt[-1][1] if stt else None
    if stopped is not None:
        stages["endpoint"] = max(0.0, stopped - speech_end - (stages["stt"] or 0.0))
    stages["llm"] = llm[0][1] if llm else None
    if tts_start is not None and llm_start is not None:
        stages["phrase"] = max(0.0, tts_start - llm_start - (stages["llm"] or 0.0))
    stages["tts"] = tts[0][1] if tts else None
    stages["silence"] = audio_at - first_chunk if first_chunk is not None else None
    known = [v for k, v in stages.items() if k != "transport" and v is not None]
    if len(known) == len(STAGES) - 1:
        stages["transport"] = turn.voice_to_voice - sum(known)
    turn.stages = stages
    return turn


@dataclass
class BargeIn:
    """One interruption: the caller talks over a long answer."""

    stop_latency: float | None = None  # caller's speech onset -> last bot audio chunk received
    interruption_latency: float | None = None  # onset -> the server's interruption message
    transcript: str = ""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audio_stop_time(
    audio_times: Sequence[float],
    onset: float,
    *,
    resumed_at: float | None = None,
    gap: float = AUDIO_STOP_GAP_SECS,
) -> float | None:
    """Arrival time of the last bot audio chunk of the answer the caller talked over.

    That answer's audio is the run of chunks after `onset` with no pause longer than `gap`,
    ending before `resumed_at` (when the bot starts its next answer). None when no chunk
    arrived after the onset, i.e. the bot was not speaking.
    """
    last: float | None = None
    previous = onset
    for t in sorted(t for t in audio_times if t >= onset):
        if t - previous > gap or (resumed_at is not None and t >= resumed_at):
            break
        last = previous = t
    return last


def bot_speaking_at(events: Sequence[EventLike], t: float) -> bool:
    """Whether the bot's turn was under way at `t`: started speaking and not yet stopped.

    A pause inside an answer (the TTS catching up on a busy machine) still counts as
    speaking, as it does for a caller hearing it.
    """
    state = [
        e.kind for e in events if e.t < t and e.kind.startswith("bot-") and "speaking" in e.kind
    ]
    return bool(state) and state[-1] == "bot-started-speaking"


def analyse_barge_in(events: Sequence[EventLike], speech_start: float) -> BargeIn:
    """Measure how quickly the bot went quiet after the caller started talking over it.

    Audio and messages share one ordered socket, so the interrupted answer's audio is every
    chunk that arrived between the caller's onset and the server's interruption message.
    An answer that finished (bot-stopped-speaking) before that message was not interrupted
    and is not measured. Without an interruption message the bot was not interrupted: its
    answer ran on until a pause (or its next answer), which is reported with an error.
    """
    result = BargeIn()
    audio = [e.t for e in events if e.kind == "audio"]
    if not bot_speaking_at(events, speech_start):
        result.error = "the bot was not speaking when the caller barged in"
        return result
    interrupted = _first(events, "interruption", speech_start, float("inf"))
    ended = _first(events, "bot-stopped-speaking", speech_start, interrupted or float("inf"))
    if interrupted is not None and ended is not None and ended < interrupted:
        result.error = f"the answer ended by itself {ended - speech_start:.2f} s after the onset"
        return result
    if interrupted is not None:
        result.interruption_latency = interrupted - speech_start
        stop = max((t for t in audio if speech_start <= t <= interrupted), default=None)
    else:
        result.error = "the server sent no interruption"
        resumed = _first(events, "bot-started-speaking", speech_start, float("inf"))
        stop = audio_stop_time(audio, speech_start, resumed_at=resumed)
    result.stop_latency = (stop - speech_start) if stop is not None else 0.0
    result.transcript = " ".join(
        str(e.data.get("text", "")).strip()
        for e in events
        if e.kind == "user-transcription" and e.t >= speech_start and isinstance(e.data, dict)
    ).strip()
    return result
