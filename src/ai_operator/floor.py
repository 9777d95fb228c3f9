"""The bot's side of the floor: paced playback, echo suppression and what the user heard.

One `BotFloor` per session is shared by the parts of the pipeline that must agree on what
the bot is saying right now:

    transport.input -> EchoGate -> STT -> user aggregator (BargeInStrategy) -> LLM -> TTS
                    -> OutputPacer -> transport.output -> HeardTextFilter -> assistant aggregator

- `OutputPacer` releases bot audio in real time, at most `lead_secs` ahead of playback, and
  records every chunk in the `Playout` model. Pipecat's WebSocket output alone sends audio
  at twice real time, so a long answer piles up seconds of audio in the client; with the
  pacer, pausing the bot silences it within `lead_secs`, and "what has played" is known.
- `EchoGate` silences microphone input that is much quieter than the bot audio playing at
  that moment: the bot's own voice leaking back never reaches the VAD, STT or Smart Turn.
- `HeardTextFilter` keeps the assistant context honest after an interruption: only the
  words that played (estimated from audio duration) are written, marked as cut off, and
  spoken-text frames that arrive after the interruption are dropped instead of leaking
  into the next answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMAssistantPushAggregationFrame,
    LLMFullResponseEndFrame,
    OutputAudioRawFrame,
    SystemFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from ai_operator.audio import OUTPUT_CHUNK_MS, PLAYOUT_STEP_MS, SAMPLE_WIDTH_BYTES, rms_int16
from ai_operator.turns import (
    INTERRUPTED_MARK,
    Playout,
    Reply,
    Segment,
    is_echo_level,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class BotFloor:
    """What the bot is saying, what has played, and whether it may go on (one per session).

    `grace_secs`: the bot still holds the floor this long after its audio stopped playing
    (a breath between sentences), so speech right then is judged as an overlap, not as a
    fresh turn. `recent_words`: how many of the bot's last words are kept to recognise its
    voice in a transcript. `secs_per_char`: the speaking rate that sizes a sentence whose
    audio is still arriving. The settings of the same names document them.
    """

    def __init__(
        self,
        *,
        lead_secs: float,
        grace_secs: float,
        recent_words: int,
        secs_per_char: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.lead_secs = lead_secs
        self.grace_secs = grace_secs
        self.recent_words = recent_words
        self.secs_per_char = secs_per_char
        self.playout = Playout()
        self.reply: Reply | None = None
        self._clock = clock
        self._may_play = asyncio.Event()
        self._may_play.set()
        self._next_segment_id = 0
        self._earlier_words: list[str] = []

    def now(self) -> float:
        return self._clock()

    # --- pausing -------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        return not self._may_play.is_set()

    def pause(self) -> None:
        """Stop releasing bot audio; what the client holds (<= lead) still plays out."""
        if not self.paused:
            logger.debug("bot paused for overlapping speech")
        self._may_play.clear()

    def resume(self) -> None:
        if self.paused:
            logger.debug("bot resumes")
        self._may_play.set()

    async def wait_until_may_play(self) -> None:
        await self._may_play.wait()

    def holds_floor(self, now: float | None = None) -> bool:
        """True while bot audio plays (or just played, or is paused mid-reply)."""
        now = self.now() if now is None else now
        return self.paused or self.playout.last_audio_end() > now - self.grace_secs

    # --- the reply being spoken ----------------------------------------------------------

    def _reply_for(self, key: str | None) -> Reply:
        key = key or ""
        if self.reply is None or self.reply.key != key:
            if self.reply is not None:
                self._remember(" ".join(s.text for s in self.reply.segments))
            self.reply = Reply(key=key, first_segment_id=self._next_segment_id)
        return self.reply

    def _remember(self, text: str) -> None:
        self._earlier_words = (self._earlier_words + text.split())[-self.recent_words :]

    def on_text_announced(self, key: str | None, text: str) -> None:
        """The TTS is about to speak `text` (a sentence) in reply `key`."""
        reply = self._reply_for(key)
        reply.segments.append(Segment(text=text, secs_per_char=self.secs_per_char))
        self._next_segment_id = reply.segment_id(len(reply.segments))

    def on_text_spoken(self, key: str | None) -> None:
        """All audio of the earliest unfinished sentence of `key` has been released."""
        if self.reply is None or self.reply.key != (key or ""):
            return
        for segment in self.reply.segments:
            if not segment.complete:
                segment.complete = True
                return

    def on_audio_queued(self, key: str | None, secs: float) -> None:
        """`secs` more audio of the reply's current sentence arrived from the TTS."""
        reply = self._reply_for(key)
        if not reply.segments:  # audio without announced text: count it, say nothing
            self.on_text_announced(key, "")
        reply.segments[-1].audio_secs += secs

    def on_audio_sent(self, secs: float, rms: float) -> None:
        """`secs` of the current sentence's audio go to the client now."""
        reply = self.reply
        segment_id = reply.segment_id(len(reply.segments) - 1) if reply else -1
        self.playout.release(secs, rms, self.now(), segment_id)

    def on_interruption(self) -> None:
        """The client flushes its audio; nothing unplayed will be heard."""
        self.playout.flush(self.now())
        self.resume()

    def take_cut_off_text(self) -> str | None:
        """Heard words of the reply just interrupted, once; None if it was already committed."""
        reply = self.reply
        if reply is None or reply.committed:
            return None
        reply.committed = True
        return reply.heard_text(self.playout, self.now())

    def mark_committed(self, key: str | None) -> None:
        if self.reply is not None and self.reply.key == (key or ""):
            self.reply.committed = True

    def recent_text(self) -> str:
        """The bot's last words (earlier replies and this one), to spot its echo."""
        current = " ".join(s.text for s in self.reply.segments) if self.reply else ""
        return " ".join((self._earlier_words + current.split())[-self.recent_words :])


def _slice(frame: OutputAudioRawFrame, audio: bytes) -> OutputAudioRawFrame:
    piece = dataclasses.replace(frame, audio=audio)
    piece.transport_destination = frame.transport_destination
    return piece


class OutputPacer(FrameProcessor):
    """Releases bot audio in `chunk_ms` pieces, in real time, `lead_secs` ahead at most.

    Each piece is told to the playout model in `step_ms` steps, so what it knows of the
    bot's loudness and of what was heard does not depend on how the audio is sent. Frames
    behind the audio (spoken text, end of reply) keep their order. While the floor is
    paused nothing is released; an interruption drops the queue (Pipecat cancels this
    processor's work) and tells the playout model that the client flushed.
    """

    def __init__(
        self,
        floor: BotFloor,
        *,
        chunk_ms: int = OUTPUT_CHUNK_MS,
        step_ms: int = PLAYOUT_STEP_MS,
        **kwargs: object,
    ):
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._floor = floor
        self._chunk_ms = chunk_ms
        self._step_ms = min(step_ms, chunk_ms)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._floor.on_interruption()
        elif direction is FrameDirection.DOWNSTREAM and not isinstance(frame, SystemFrame):
            if isinstance(frame, OutputAudioRawFrame):
                await self._play(frame)
                return
            if isinstance(frame, TTSTextFrame):
                self._floor.on_text_spoken(frame.context_id)
            elif isinstance(frame, AggregatedTextFrame) and frame.will_be_spoken:
                self._floor.on_text_announced(frame.context_id, frame.raw_text or frame.text)
        await self.push_frame(frame, direction)

    async def _play(self, frame: OutputAudioRawFrame) -> None:
        floor = self._floor
        bytes_per_sec = frame.sample_rate * frame.num_channels * SAMPLE_WIDTH_BYTES
        frame_bytes = frame.num_channels * SAMPLE_WIDTH_BYTES
        chunk = bytes_per_sec * self._chunk_ms // 1000 // frame_bytes * frame_bytes
        step = bytes_per_sec * self._step_ms // 1000 // frame_bytes * frame_bytes
        floor.on_audio_queued(getattr(frame, "context_id", None), len(frame.audio) / bytes_per_sec)
        for offset in range(0, len(frame.audio), chunk):
            piece = frame.audio[offset : offset + chunk]
            while True:
                await floor.wait_until_may_play()
                wait = floor.playout.playhead - floor.lead_secs - floor.now()
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            for at in range(0, len(piece), step):
                part = piece[at : at + step]
                floor.on_audio_sent(len(part) / bytes_per_sec, rms_int16(part))
            await self.push_frame(_slice(frame, piece))


class EchoGate(FrameProcessor):
    """Silences input that is only the bot's own voice coming back through the microphone.

    A frame is echo when it is at least `margin_db` quieter than the loudest bot audio that
    played within the last `tail_secs` (the echo path's delay). The user talking over the
    bot is louder than the echo and opens the gate for `hangover_secs` after each loud
    frame, so the quieter parts of their words pass too; silenced frames never reach VAD
    or STT. Quick and never waiting, it runs in Pipecat's direct mode (audio_batch.py).
    """

    def __init__(
        self,
        floor: BotFloor,
        *,
        margin_db: float,
        tail_secs: float,
        hangover_secs: float,
        **kwargs: object,
    ):
        super().__init__(enable_direct_mode=True, **kwargs)  # type: ignore[arg-type]
        self._floor = floor
        self._margin_db = margin_db
        self._tail_secs = tail_secs
        self._hangover_secs = hangover_secs
        self.gated_frames = 0
        self._open_until = 0.0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and direction is FrameDirection.DOWNSTREAM:
            now = self._floor.now()
            reference = self._floor.playout.level(now - self._tail_secs, now)
            # While the bot is paused for the user, they are talking: let all of it through.
            if reference and not self._floor.paused:
                if not is_echo_level(rms_int16(frame.audio), reference, self._margin_db):
                    self._open_until = now + self._hangover_secs
                elif now >= self._open_until:
                    frame.audio = bytes(len(frame.audio))
                    self.gated_frames += 1
        await self.push_frame(frame, direction)


_REPLY_END = (TTSStoppedFrame, LLMFullResponseEndFrame, LLMAssistantPushAggregationFrame, EndFrame)


class HeardTextFilter(FrameProcessor):
    """Decides which of the bot's words reach the assistant context (sits before it).

    Spoken-text frames of a reply are held until the reply ends and then passed on whole.
    If the reply is interrupted instead, they are dropped and the words the user actually
    heard are written to the context, ending in `INTERRUPTED_MARK`. Text frames of an
    interrupted reply that arrive after the interruption (Pipecat's output transport may
    push one it had already dequeued) are dropped too.

    The bot's audio ends here: the assistant aggregator after it never reads it, and at
    25 chunks a second per call the hops cost CPU. Quick and never waiting, this runs in
    Pipecat's direct mode (audio_batch.py).
    """

    def __init__(self, floor: BotFloor, context: LLMContext, **kwargs: object):
        super().__init__(enable_direct_mode=True, **kwargs)  # type: ignore[arg-type]
        self._floor = floor
        self._context = context
        self._held: list[TTSTextFrame] = []
        self._cut_off: set[str] = set()
        # Told each spoken-text frame as the output transport releases it (its audio
        # starts playing): the conversation recorder's view of what the bot said.
        self.on_spoken: Callable[[str], None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._on_interruption()
        elif isinstance(frame, CancelFrame):
            self._held.clear()
        elif isinstance(frame, OutputAudioRawFrame):
            return
        elif direction is FrameDirection.DOWNSTREAM and isinstance(frame, TTSTextFrame):
            if (frame.context_id or "") not in self._cut_off:
                self._held.append(frame)
                if self.on_spoken is not None:
                    self.on_spoken(frame.text)
            return
        elif direction is FrameDirection.DOWNSTREAM and isinstance(frame, _REPLY_END):
            await self._release()
        await self.push_frame(frame, direction)

    async def _release(self) -> None:
        held, self._held = self._held, []
        for text_frame in held:
            self._floor.mark_committed(text_frame.context_id)
            await self.push_frame(text_frame)

    def _on_interruption(self) -> None:
        self._held.clear()
        reply = self._floor.reply
        if reply is not None:
            self._cut_off.add(reply.key)
        heard = self._floor.take_cut_off_text()
        if heard:
            logger.debug("bot was cut off after: %s", heard)
            self._context.add_message({"role": "assistant", "content": heard + INTERRUPTED_MARK})
