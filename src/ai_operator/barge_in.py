"""When the user's speech takes the floor, and when it is only a backchannel.

`BargeInStrategy` (a Pipecat user-turn *start* strategy) replaces "VAD start = interrupt":

- bot silent: speech onset starts the user's turn at once;
- bot speaking: speech onset *pauses* the bot (`BotFloor.pause`), which silences it within
  the playout lead, and the overlap is judged:
    * it lasts longer than `backchannel_max_secs`       -> the user takes the floor;
    * it ends sooner                                     -> its words are awaited, the bot
      still paused for up to `words_wait_secs` (they are usually there within a Whisper
      pass), then going on where it paused;
    * the user goes on within `continuation_secs`        -> the bot pauses again and the
      overlap is measured from its first onset ("Wait, ... stop, I have a question");
    * the short overlap's transcript has a cue word ("stop", "wait", "what") or enough
      words                                              -> the user takes the floor (late);
    * otherwise (backchannel, noise, the bot's echo)     -> the words are reported as a
      `UserBackchannelFrame` and kept out of the context.
  Taking the floor is Pipecat's user turn start: it broadcasts the interruption that
  cancels LLM and TTS and makes the client flush its audio.

It follows speech through `SpeechTracker` (end_of_turn.py's strategy does too), on the
input audio's own clock. Pipecat's VAD frames are queued behind the audio still waiting in
the user aggregator, so on a busy machine a start and its stop can arrive together; the
VAD's state, read as each audio frame is processed, is never late.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserBackchannelFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start.base_user_turn_start_strategy import BaseUserTurnStartStrategy
from pipecat.utils.time import time_now_iso8601

from ai_operator.audio import SAMPLE_WIDTH_BYTES
from ai_operator.floor import BotFloor
from ai_operator.turn_models import SharedSileroVADAnalyzer
from ai_operator.turns import (
    Overlap,
    Vocabulary,
    judge_short_overlap,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BargeInRules:
    """How speech over the bot is judged; each field is documented by its setting.

    `decision_margin_secs` is slack on top of the VAD's stop delay before a still-running
    overlap is called long; speech resuming within `continuation_secs` after a short
    overlap ended is the same overlap going on (a pause between words), not a second
    backchannel. After a short overlap the bot stays paused up to `words_wait_secs` for
    its words: resuming at once and stopping again when they turn out to be "Excuse me,"
    plays a fragment of the answer over the user.
    """

    backchannel_max_secs: float
    min_words: int
    verdict_timeout_secs: float
    decision_margin_secs: float
    continuation_secs: float
    words_wait_secs: float
    echo_share: float
    vocabulary: Vocabulary


class ObservedVAD(SharedSileroVADAnalyzer):
    """Silero VAD (on the process-wide session) that remembers its latest state, for the
    turn strategies to read, and tells its listeners each state as it is reached.

    A listener hears the state for a buffer of caller audio (and the buffer's length in
    seconds) the moment the VAD has judged it, in the user aggregator: a processor before
    the aggregator (the local STT's early Whisper) that read `latest_state` per frame of
    its own would read it a frame late.
    """

    latest_state: VADState = VADState.QUIET

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._listeners: list[Callable[[VADState, float], None]] = []

    def add_listener(self, listener: Callable[[VADState, float], None]) -> None:
        self._listeners.append(listener)

    async def analyze_audio(self, buffer: bytes) -> VADState:
        state = self.latest_state = await super().analyze_audio(buffer)
        if self._listeners:
            secs = len(buffer) / (SAMPLE_WIDTH_BYTES * self.sample_rate)
            for listener in self._listeners:
                listener(state, secs)
        return state


class SpeechEdge(enum.Enum):
    STARTED = "started"
    STOPPED = "stopped"


class SpeechTracker:
    """Follows the VAD frame by frame; times are seconds of input audio seen.

    The user aggregator runs the VAD on each audio frame before its turn strategies see
    that frame, so the state read here is the VAD's verdict on exactly this much audio.
    Edges are reported where the VAD controller reports them: QUIET -> SPEAKING after
    `start_secs` of speech, back to QUIET after `stop_secs` of silence.
    """

    def __init__(self, vad: ObservedVAD) -> None:
        self._vad = vad
        self.audio_secs = 0.0
        self.speaking = False
        self.onset = 0.0  # estimated start of the current / last speech
        self.ended = 0.0  # estimated end of the last speech

    def on_audio(self, frame: InputAudioRawFrame) -> SpeechEdge | None:
        self.audio_secs += len(frame.audio) / (
            SAMPLE_WIDTH_BYTES * frame.num_channels * frame.sample_rate
        )
        speaking = self._vad.latest_state in (VADState.SPEAKING, VADState.STOPPING)
        if speaking == self.speaking:
            return None
        self.speaking = speaking
        params = self._vad.params
        if speaking:
            self.onset = self.audio_secs - params.start_secs
            return SpeechEdge.STARTED
        self.ended = self.audio_secs - params.stop_secs
        return SpeechEdge.STOPPED

    @property
    def quiet(self) -> bool:
        """Not speaking, and no speech starting either (the VAD's `start_secs` not yet met)."""
        return self._vad.latest_state is VADState.QUIET

    @property
    def silence_secs(self) -> float:
        """Silence since the last speech ended (0 while speaking)."""
        return 0.0 if self.speaking else self.audio_secs - self.ended


class OverlapState(enum.Enum):
    LISTENING = "listening"  # no overlap in progress; the bot may or may not be speaking
    OVERLAP = "overlap"  # the user speaks while the bot holds the floor; the bot is paused
    JUDGING = "judging"  # a short overlap ended; its words are awaited
    USER_TURN = "user_turn"  # the user has the floor


class BargeInStrategy(BaseUserTurnStartStrategy):
    """Starts the user's turn on speech, unless it is a backchannel or echo over the bot."""

    def __init__(self, floor: BotFloor, vad: ObservedVAD, rules: BargeInRules) -> None:
        super().__init__()
        self._floor = floor
        self._speech = SpeechTracker(vad)
        self._rules = rules
        # From onset, a VAD still in speech this long after means longer than a backchannel
        # (its stop comes `stop_secs` after the speech ends).
        self._vad_stop_secs = vad.params.stop_secs
        self._long_secs = (
            rules.backchannel_max_secs + self._vad_stop_secs + rules.decision_margin_secs
        )
        self.state = OverlapState.LISTENING
        self._onset = 0.0  # first onset of the overlap being judged
        self._held_for_words = False  # JUDGING with the bot still paused for the words
        self._words = ""
        # (verdict, words) of every overlap that let the bot go on; read by tests and logs.
        self.outcomes: list[tuple[Overlap, str]] = []

    async def handle_user_turn_started(self) -> None:
        self.state = OverlapState.USER_TURN

    async def handle_user_turn_stopped(self) -> None:
        self.state = OverlapState.LISTENING
        self._floor.resume()  # never leave the bot paused once the turn is over

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, InputAudioRawFrame):
            edge = self._speech.on_audio(frame)
            if self.state is OverlapState.USER_TURN:
                pass
            elif edge is SpeechEdge.STARTED:
                await self._on_speech_started()
            elif edge is SpeechEdge.STOPPED:
                await self._on_speech_stopped()
            else:
                await self._on_tick()
        elif self.state is OverlapState.USER_TURN:
            pass
        elif isinstance(frame, TranscriptionFrame):
            await self._on_words(frame.text, final=True)
        elif isinstance(frame, InterimTranscriptionFrame):
            await self._on_words(frame.text, final=False)
        return ProcessFrameResult.CONTINUE

    # --- events --------------------------------------------------------------------------

    async def _on_tick(self) -> None:
        now = self._speech.audio_secs
        if self.state is OverlapState.OVERLAP and now - self._onset >= self._long_secs:
            await self._take_floor("overlap still going past backchannel length")
        elif self.state is OverlapState.JUDGING:
            quiet = now - self._speech.ended
            if quiet >= self._rules.verdict_timeout_secs:
                await self._let_bot_go_on(Overlap.BACKCHANNEL)  # no words came: noise
            elif (
                self._held_for_words and quiet - self._vad_stop_secs >= self._rules.words_wait_secs
            ):
                # Most likely a backchannel whose words are slow: go on, a cue in them
                # still takes the floor when they come.
                self._held_for_words = False
                self._floor.resume()

    async def _on_speech_started(self) -> None:
        onset = self._speech.onset
        if self.state is OverlapState.OVERLAP:
            return
        if (
            self.state is OverlapState.JUDGING
            and onset - self._speech.ended <= self._rules.continuation_secs
        ):
            # The user went on after a short stop: one overlap, measured from its first onset.
            self._floor.pause()
            self.state = OverlapState.OVERLAP
            if self._speech.audio_secs - self._onset >= self._rules.backchannel_max_secs:
                await self._take_floor("overlap went on past backchannel length")
            return
        # LISTENING, or JUDGING a short overlap that is over: this is new speech.
        if not self._floor.holds_floor():
            await self._take_floor("speech while the bot is silent")
            return
        if self.state is OverlapState.LISTENING:
            self._words = ""
        self._onset = onset
        self._floor.pause()
        self.state = OverlapState.OVERLAP

    async def _on_speech_stopped(self) -> None:
        if self.state is not OverlapState.OVERLAP:
            return
        spoken = self._speech.ended - self._onset
        if spoken >= self._rules.backchannel_max_secs:
            await self._take_floor(f"overlap of {spoken:.2f} s")
            return
        # Short: a backchannel or a short command ("Excuse me,"); its words decide, and
        # the bot waits for them (`_on_tick` bounds the wait).
        self.state = OverlapState.JUDGING
        self._held_for_words = True

    async def _on_words(self, text: str, *, final: bool) -> None:
        if not text.strip():
            return
        if self.state in (OverlapState.OVERLAP, OverlapState.JUDGING):
            words = f"{self._words} {text}".strip()
            verdict = self._judge(words)
            if verdict is Overlap.INTERRUPTION:
                await self._take_floor(f"words over the bot: {words!r}")
            elif final:
                self._words = words
                if self.state is OverlapState.JUDGING:
                    await self._let_bot_go_on(verdict)
            return
        if not final:
            return
        # A transcript outside any overlap or turn: late words of an overlap already judged,
        # or speech the VAD missed.
        if not self._floor.holds_floor():
            await self._take_floor("words while the bot is silent")
            return
        verdict = self._judge(text)
        if verdict is Overlap.INTERRUPTION:
            await self._take_floor(f"late words over the bot: {text!r}")
        else:
            self._words = text
            await self._let_bot_go_on(verdict)

    def _judge(self, words: str) -> Overlap:
        rules = self._rules
        return judge_short_overlap(
            words,
            self._floor.recent_text(),
            min_words=rules.min_words,
            echo_share=rules.echo_share,
            vocabulary=rules.vocabulary,
        )

    # --- outcomes ------------------------------------------------------------------------

    async def _take_floor(self, why: str) -> None:
        logger.debug("user takes the floor: %s", why)
        self.state = OverlapState.USER_TURN
        # The interruption this broadcasts flushes the client and resumes the floor.
        await self.trigger_user_turn_started()

    async def _let_bot_go_on(self, verdict: Overlap) -> None:
        words, self._words = self._words, ""
        self.state = OverlapState.LISTENING
        self.outcomes.append((verdict, words))
        logger.debug("overlap was %s (%r): bot goes on", verdict.value, words)
        if words:
            # The transcript is already in the user aggregation: keep it out of the context.
            await self.trigger_reset_aggregation()
            if verdict is Overlap.BACKCHANNEL:
                await self.push_frame(
                    UserBackchannelFrame(text=words, user_id="", timestamp=time_now_iso8601())
                )
        self._floor.resume()
