"""The embedded local speech providers as Pipecat services: faster-whisper (STT) and
Piper (TTS), on the process-wide models of `local_models.py`. The LLM, llama.cpp, is in
`local_llm.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np
from pipecat.audio.vad.vad_analyzer import VADState
from pipecat.frames.frames import (
    EagerTranscriptionFrame,
    ErrorFrame,
    Frame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from ai_operator.audio import EARLY_QUIET_SECS, LeadingSilenceTrimmer
from ai_operator.phrases import PhraseTextAggregator
from ai_operator.providers.early_stt import EarlyTranscript
from ai_operator.providers.local_models import LocalModels
from ai_operator.providers.whisper_window import SAMPLE_RATE as WHISPER_SAMPLE_RATE

if TYPE_CHECKING:  # the type only: the providers do not depend on the turn-taking code
    from ai_operator.barge_in import ObservedVAD

logger = logging.getLogger(__name__)

# Audio kept from before the VAD's start, so a segment opens before the first word: the
# VAD starts `--vad-start-secs` into the speech and Silero lags ~60 ms (Pipecat keeps 1 s,
# which Whisper then has to encode and may hallucinate on).
WHISPER_PRE_ROLL_SECS = 0.5
# End of speech -> final transcript, p99, for Pipecat's turn-stop safety net: a 2-4 s
# utterance on 2 cores takes 0.4-0.6 s (bench.turn_taking).
WHISPER_TTFS_P99_SECS = 1.0

# ----------------------------------------------------------------------------------------
# STT: faster-whisper on the shared model
# ----------------------------------------------------------------------------------------


class LocalWhisperSTTService(WhisperSTTService):
    """Pipecat's segmented Whisper service, on the process-wide model and greedy decoding.

    Greedy decoding (beam 1) is as exact as beam 5 on short conversational turns with tiny.en
    and roughly halves the time to transcript. With `window="utterance"` the encoder sees
    only the turn's audio plus a second of silence (whisper_window.py): ~50 ms instead of
    ~300 ms for a 2 s question.
    """

    def __init__(self, *, models: LocalModels, window: str = "utterance", **kwargs: Any) -> None:
        self._shared = models
        self._windowed = window == "utterance"
        self._eager = False
        self._early: EarlyTranscript | None = None  # set by `follow_vad`
        super().__init__(
            settings=WhisperSTTService.Settings(
                model=str(models.whisper_path), language=Language.EN
            ),
            # The windowed Whisper pads the speech itself (whisper_window.PAD_SECS), and the
            # 30 s path pads to 30 s: more silence only costs encoder time.
            trailing_silence_secs=0.0,
            # Each transcript is final, so the turn never waits on this safety net; set so
            # that Pipecat does not warn that it is unset in every conversation.
            ttfs_p99_latency=WHISPER_TTFS_P99_SECS,
            **kwargs,
        )

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        # Pipecat's name for the pre-roll it keeps while nobody speaks (1 s by default).
        self._audio_buffer_size_1s = int(self.sample_rate * WHISPER_PRE_ROLL_SECS) * 2

    def _load(self) -> None:
        self._model = self._shared.whisper

    def follow_vad(
        self,
        vad: ObservedVAD,
        *,
        eager: bool = False,
        quiet_secs: float = EARLY_QUIET_SECS,
        dip_secs: float = 0.0,
        unfinished: Callable[[str], bool] | None = None,
    ) -> None:
        """Transcribe early (early_stt.py), following the pipeline's VAD (barge_in.ObservedVAD)
        as it judges each buffer of caller audio, once it has heard `quiet_secs` of a pause
        or the audio has been silent for `dip_secs` (0 = never);
        with `eager`, report each early transcript downstream as soon as it is done, as an
        `EagerTranscriptionFrame` (the turn's end predicted, not committed). An early
        transcript that is cut short or, by `unfinished`, sounds unfinished is done again on
        the whole segment at the stop.

        The VAD runs in the user aggregator, after this service has buffered the same audio
        (a frame is buffered before it is pushed on), so the early pass starts on the
        frame the VAD first calls quiet, with that frame in the buffer."""
        self._eager = eager
        early = self._early = EarlyTranscript(
            self._submit_transcription,
            quiet_secs=quiet_secs,
            on_ready=self._on_early_transcript,
            unfinished=unfinished,
            dip_secs=dip_secs,
        )

        def judged(state: VADState, secs: float) -> None:
            early.on_audio(self._audio_buffer, state, speaking=self._user_speaking, frame_secs=secs)

        vad.add_listener(judged)

    def _on_early_transcript(self, text: str) -> None:
        if self._eager:
            frame = EagerTranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
            self.create_task(self.push_frame(frame), f"{self}::eager_transcript")

    def _submit_transcription(self, audio: bytes) -> Future[str]:
        """Queue a Whisper pass on the shared thread; the job, so that a caller can cancel
        it while it waits. Raises RuntimeError once the models are closed."""
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
        whisper = self._shared.windowed_whisper

        def transcribe() -> str:
            started = time.perf_counter()
            result = (
                whisper.transcribe(samples) if self._windowed else whisper.transcribe_full(samples)
            )
            logger.debug(
                "whisper: %.2f s of audio in %.0f ms (%s): %r",
                len(samples) / WHISPER_SAMPLE_RATE,
                (time.perf_counter() - started) * 1000,
                result.path,
                result.text,
            )
            return result.text

        return self._shared.stt_executor.submit(transcribe)

    async def _transcribe(self, audio: bytes) -> str:
        return await asyncio.wrap_future(self._submit_transcription(audio))

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        await self.start_processing_metrics()
        early = self._early.take(audio) if self._early is not None else None
        if early is None:
            logger.debug("transcribing the segment afresh")
        else:
            state = "ready" if early.done() else "still running"
            logger.debug("the early transcript is the segment's (%s)", state)
        try:
            text = await (early if early is not None else self._transcribe(audio))
            if early is not None and self._early is not None and self._early.doubtful(text):
                logger.debug("the early transcript %r is in doubt: transcribing again", text)
                text = await self._transcribe(audio)
        except RuntimeError as exc:  # executor shut down during server stop
            yield ErrorFrame(error=f"speech-to-text unavailable: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)


# ----------------------------------------------------------------------------------------
# TTS: Piper on the shared voice
# ----------------------------------------------------------------------------------------


class LocalPiperTTSService(TTSService):
    """Piper on the process-wide voice; a phrase's audio streams out in pieces as it is
    decoded (`piper_stream`)."""

    def __init__(self, *, models: LocalModels, **kwargs: Any) -> None:
        self._models = models
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=models.piper_path.stem, language=None),
            **kwargs,
        )
        # Speak each clause as soon as it is complete, not only whole sentences.
        self._text_aggregator = PhraseTextAggregator()
        self._last_context: str | None = None  # the reply whose phrases are being spoken

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        voice = self._models.piper
        executor = self._models.tts_executor
        loop = asyncio.get_running_loop()

        speech = self._models.speech
        # The reply's first phrase starts at its first sound (audio.LeadingSilenceTrimmer);
        # later phrases keep their lead-in, part of the pause after the phrase before.
        first_phrase = context_id != self._last_context
        self._last_context = context_id

        async def chunks() -> AsyncIterator[bytes]:
            iterator = voice.stream(text)
            speech.phrase_begun()
            voiced = False
            trimmer = LeadingSilenceTrimmer(voice.config.sample_rate) if first_phrase else None
            try:
                while True:
                    audio = await loop.run_in_executor(executor, next, iterator, None)
                    if not voiced:
                        voiced = True
                        speech.phrase_voiced()
                    if audio is None:
                        if trimmer is not None and (held := trimmer.flush()):
                            yield held
                        return
                    if trimmer is not None:
                        audio = trimmer.feed(audio)
                    if audio:
                        yield audio
            finally:
                if not voiced:
                    speech.phrase_voiced()

        await self.start_tts_usage_metrics(text)
        try:
            async for frame in self._stream_audio_frames_from_iterator(
                chunks(), in_sample_rate=voice.config.sample_rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        finally:
            await self.stop_ttfb_metrics()
