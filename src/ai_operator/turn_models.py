"""Silero VAD and Smart Turn v3 with their ONNX sessions loaded once per process.

Pipecat's analyzers load their model in every instance: about 20 MB and 50 ms per
conversation. An onnxruntime `InferenceSession` is safe to call from several threads, and
the per-conversation state (Silero's recurrent state, Smart Turn's audio buffer) lives in
the analyzer objects, so each conversation keeps its own analyzers around one shared session.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.base_turn_analyzer import EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.utils import exp_smoothing
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState
from pipecat.audio.volume import VOLUME_WINDOW_SECS
from pipecat.metrics.metrics import MetricsData
from pipecat.utils.env import env_truthy

from ai_operator.audio import AUDIBLE_RMS, EARLY_QUIET_SECS, peak_int16, rms_int16

logger = logging.getLogger(__name__)

SILERO_MODEL = ("pipecat.audio.vad.data", "silero_vad.onnx")
SILENCE_GATE_OFF_DBFS = -100.0
# Windows skipped by the silence gate that Silero hears before it scores again.
SILENCE_REPLAY_WINDOWS = 3
SMART_TURN_MODEL = ("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx")
# Pipecat's VAD volume is the BS.1770 loudness of the last 400 ms, and loudness below the
# -70 LUFS absolute gate reads 0. Loudness is -0.691 dB + the K-weighted mean square, and
# the K-weighting gains at most 4.2 dB (at 16 kHz, near Nyquist), so a block whose plain
# mean square is below -74 dBFS reads 0 whatever its spectrum: at -80 dBFS (6 dB to spare)
# the volume is known without measuring it.
QUIET_BLOCK_DBFS = -80.0
# The nice value of the Smart Turn threads where every stage is a cloud provider (below).
SMART_TURN_NICE = 10
MAX_NICE = 19


def _bundled(package: str, name: str) -> str:
    return str(resources.files(package).joinpath(name))


def _session(path: str, *, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def lower_thread_priority(nice: int) -> None:
    """Add `nice` to the calling thread's nice value (Linux schedules threads one by one;
    elsewhere, and where the OS refuses, the thread keeps its priority)."""
    if nice > 0 and sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        with contextlib.suppress(OSError):
            current = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(MAX_NICE, current + nice))


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, where the OS tells)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@dataclass
class TurnModels:
    """The process-wide ONNX sessions for voice activity and end-of-turn detection, and
    the threads Smart Turn runs on.

    Pipecat gives each conversation's Smart Turn a thread of its own. A verdict is ~50-110
    ms of one core, so with many conversations several run at once and share the cores
    with the event loop: every one of them finishes late, and the loop slows for all
    calls. One pool with a thread per usable CPU runs them in order of arrival instead,
    each at full speed.
    """

    silero: ort.InferenceSession
    smart_turn: ort.InferenceSession
    smart_turn_executor: ThreadPoolExecutor

    @classmethod
    def load(cls, *, smart_turn_nice: int = 0, threads: int | None = None) -> TurnModels:
        """Smart Turn gets `threads` threads (default: one per usable CPU); a server of
        several worker processes gives each its share of the CPUs, so that a burst of
        verdicts runs one after another, each at full speed, rather than all at once and
        all late (queued, a verdict whose caller talks on is dropped before it runs).

        `smart_turn_nice` > 0 runs the verdicts at a lower priority than the event loop.

        That suits a server whose stages are all cloud providers: one loop carries the audio
        of many calls, and while a verdict (~50 ms of a core) shares a core with it at equal
        priority the loop gets half of it, so the frames of every call on it back up before
        their VAD; a verdict is asked for early in a pause (`EARLY_QUIET_SECS`) and needed at
        the VAD's stop, so it can afford to wait for the loop. Not with local models: their
        inference threads would then hold back the verdict of the one call they serve.
        """
        return cls(
            silero=_session(_bundled(*SILERO_MODEL), threads=1),
            smart_turn=_session(_bundled(*SMART_TURN_MODEL), threads=1),
            smart_turn_executor=ThreadPoolExecutor(
                threads or usable_cpus(),
                thread_name_prefix="smart-turn",
                initializer=lower_thread_priority,
                initargs=(smart_turn_nice,),
            ),
        )


def silence_peak(silence_dbfs: float | None) -> float:
    """The int16 peak below which audio is silence for `--vad-silence-dbfs`; 0: never."""
    if silence_dbfs is None or silence_dbfs <= SILENCE_GATE_OFF_DBFS:
        return 0.0
    return 32768 * 10 ** (silence_dbfs / 20)


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """SileroVADAnalyzer around a shared session; its recurrent state stays per instance.

    Audio is analysed on the event loop rather than on the analyzer's own thread, as
    Pipecat does: one Silero window costs ~0.15 ms, less than handing every 20 ms frame to
    a thread and back (a thread per conversation, woken 50 times a second; in the capacity
    benchmark the hand-off cost more CPU than the model).
    """

    def __init__(
        self,
        *,
        session: ort.InferenceSession,
        silence_dbfs: float | None = None,
        **kwargs: Any,
    ) -> None:
        VADAnalyzer.__init__(self, **kwargs)
        # Windows whose loudest sample is below this are scored 0 without the model; at
        # -100 dBFS (below one 16-bit step) the gate is off.
        self._silence_peak = silence_peak(silence_dbfs)
        # The latest windows the model did not hear, replayed to it before it next scores.
        self._skipped: collections.deque[bytes] = collections.deque(maxlen=SILENCE_REPLAY_WINDOWS)
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = session
        model.sample_rates = [8000, 16000]
        model.reset_states()
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        # Sums of squares of the latest windows, covering at least the volume's 400 ms.
        self._energies: collections.deque[float] = collections.deque()
        self._energies_rate = 0  # the sample rate the two are set up for
        self._quiet_energy = 0.0  # a sum below this over 400 ms is a block that reads 0

    async def analyze_audio(self, buffer: bytes) -> VADState:
        return self._run_analyzer(buffer)

    def voice_confidence(self, buffer: bytes) -> float:
        """Silero's confidence, or 0 for an all but silent window while nobody speaks.

        Between a caller's turns the microphone is mostly silence (browsers' noise
        suppression, telephony), and a window with no sample above `silence_dbfs` cannot
        start speech; skipping the model there leaves its recurrent state as after the last
        window it heard, much as Pipecat's own resets during silence do. Once speech may
        have started, every window is scored: a quiet gap between words must not end it.
        """
        if self._silence_peak and self._vad_state == VADState.QUIET:
            if len(buffer) and peak_int16(buffer) < self._silence_peak:
                self._maybe_reset_model(0.0)
                self._skipped.append(buffer)
                return 0.0
        # The model first hears the quiet just before this window, as it would have: it
        # scores the first words higher after hearing the room.
        while self._skipped:
            super().voice_confidence(self._skipped.popleft())
        return super().voice_confidence(buffer)

    def _get_smoothed_volume(self, audio: bytes) -> float:
        """Pipecat's smoothed volume, without measuring the loudness of a block that
        cannot reach the absolute gate (QUIET_BLOCK_DBFS): it reads 0 all the same.

        Loudness costs ~60 us a window; between a caller's turns, with noise suppression or
        telephony silence, nearly every block is this quiet.
        """
        window = np.frombuffer(audio, np.int16).astype(np.float64)
        samples = len(window)
        if samples == 0:
            return super()._get_smoothed_volume(audio)
        if self._energies_rate != self.sample_rate:
            self._energies_rate = self.sample_rate
            block = VOLUME_WINDOW_SECS * self.sample_rate
            self._energies = collections.deque(maxlen=math.ceil(block / samples) + 1)
            self._quiet_energy = block * (32768**2) * 10 ** (QUIET_BLOCK_DBFS / 10)
        self._energies.append(float(np.dot(window, window)))
        # The windows kept cover the 400 ms block and then some: their sum bounds its energy.
        if sum(self._energies) >= self._quiet_energy:
            return super()._get_smoothed_volume(audio)
        self._volume_tracker.update(audio, self.sample_rate)  # measured when next needed
        return float(exp_smoothing(0.0, self._prev_volume, self._smoothing_factor))


class VADStateSource(Protocol):
    """The pipeline's VAD as the early Smart Turn and the audio batcher read it
    (barge_in.ObservedVAD)."""

    latest_state: VADState

    @property
    def params(self) -> VADParams: ...

    @property
    def sample_rate(self) -> int: ...

    def num_frames_required(self) -> int: ...


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """LocalSmartTurnAnalyzerV3 around a shared session; its audio buffer stays per instance.

    Given the pipeline's `vad`, it also runs Smart Turn early, as the local STT does with
    Whisper (early_stt.py): Pipecat asks for a verdict at the VAD's stop, `stop_secs` after
    the speech, and waits ~50 ms for it before the turn can end. Once the VAD has said
    STOPPING for `quiet_secs` of audio, the model runs on the audio so far, its quiet tail
    repeated out to the length it will have at the stop; at the stop, if no speech came in
    between, that verdict is the answer. Speech resuming throws it away.
    """

    def __init__(
        self,
        *,
        session: ort.InferenceSession,
        vad: VADStateSource | None = None,
        quiet_secs: float = EARLY_QUIET_SECS,
        dip_secs: float = 0.0,
        dip_rms: float = AUDIBLE_RMS,
        executor: ThreadPoolExecutor | None = None,
        **kwargs: Any,
    ) -> None:
        BaseSmartTurn.__init__(self, **kwargs)
        self._shared_executor = executor  # TurnModels.smart_turn_executor, or Pipecat's own
        self._log_data = env_truthy("PIPECAT_SMART_TURN_LOG_DATA", default=False)
        self._session = session
        self._vad = vad
        self._quiet_secs = quiet_secs
        self._dip_secs = dip_secs  # 0: early verdicts start on the VAD's pause only
        self._dip_rms = dip_rms
        # This pause's frames so far: quiet ones (a dip) while SPEAKING, all while STOPPING.
        self._quiet: list[np.ndarray] = []
        self._paused = False  # the VAD has called the early verdict's pause quiet
        self._early: asyncio.Future[tuple[EndOfTurnState, MetricsData | None]] | None = None
        self._early_job: Future[tuple[EndOfTurnState, MetricsData | None]] | None = None
        self.early_runs = 0  # early verdicts started, used or not (tests, logs)

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        if self._shared_executor is not None:
            return self._shared_executor
        return super()._model_executor

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        state = super().append_audio(buffer, is_speech)
        if self._vad is not None and is_speech and self._audio_buffer:
            self._follow_vad(self._vad, self._audio_buffer[-1][1])
        return state

    def _follow_vad(self, vad: VADStateSource, chunk: np.ndarray) -> None:
        if vad.latest_state is VADState.SPEAKING:
            if self._dip_secs <= 0 or self._paused or rms_int16(chunk.tobytes()) >= self._dip_rms:
                self._quiet.clear()
                self._drop_early()  # the user goes on: not the end of this turn
                return
            # Silent audio the VAD still calls speech: maybe the words' end (early_stt.py).
            self._quiet.append(chunk)
            needed = self._dip_secs
        elif vad.latest_state is VADState.STOPPING:
            self._quiet.append(chunk)
            self._paused = self._paused or self._early is not None
            needed = self._quiet_secs
        else:
            return
        if self._early is not None or sum(map(len, self._quiet)) < round(needed * self.sample_rate):
            return
        self._paused = vad.latest_state is VADState.STOPPING
        # At the stop the buffer will end in `stop_secs` of this quiet.
        quiet = np.concatenate(self._quiet)
        missing = int(vad.params.stop_secs * self.sample_rate) - len(quiet)
        snapshot = list(self._audio_buffer)
        if missing > 0:
            snapshot.append((snapshot[-1][0], np.resize(quiet, missing)))
        # Submitted here rather than with run_in_executor, to keep the job: cancelling the
        # asyncio future reaches a queued job only on the loop's next turn, by which time a
        # thread may have taken it.
        self._early_job = self._model_executor.submit(self._process_speech_segment, snapshot)
        self._early = asyncio.wrap_future(self._early_job)
        self._early.add_done_callback(_consume)
        self.early_runs += 1

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, MetricsData | None]:
        early, self._early, self._early_job = self._early, None, None  # awaited: not dropped
        self._quiet.clear()
        self._paused = False
        if early is None:
            return await super().analyze_end_of_turn()
        state, result = await early
        if state == EndOfTurnState.COMPLETE:
            self._clear(state)
        logger.debug("smart turn verdict from the early run: %s", state.name)
        return state, result

    def _clear(self, turn_state: EndOfTurnState) -> None:
        super()._clear(turn_state)
        self._quiet.clear()
        self._drop_early()

    def _drop_early(self) -> None:
        """Forget the early verdict; if it is still queued behind other conversations'
        verdicts (a busy server), it never runs: ~50 ms of a core saved for each pause the
        user talks on after."""
        cancel_job(self._early_job, self._early)
        self._early, self._early_job = None, None
        self._paused = False


def cancel_job(job: Future[Any] | None, awaited: asyncio.Future[Any] | None) -> None:
    """Cancel an executor job and the asyncio future that awaits it (`asyncio.wrap_future`),
    both at once: a job still queued never runs (cancelling `awaited` alone reaches the job
    only on the loop's next turn, when a freed thread may have taken it), and one a thread
    already runs finishes unheard."""
    if job is not None:
        job.cancel()
    if awaited is not None:
        awaited.cancel()


def _consume(future: asyncio.Future[Any]) -> None:
    """A discarded early verdict may fail; nobody waits for it, so say nothing."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        future.result()
