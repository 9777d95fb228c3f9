"""Silero VAD and Smart Turn v3 with their ONNX sessions loaded once per process.

Pipecat's analyzers load their model in every instance: about 20 MB and 50 ms per
conversation. An onnxruntime `InferenceSession` is safe to call from several threads, and
the per-conversation state (Silero's recurrent state, Smart Turn's audio buffer) lives in
the analyzer objects, so each conversation keeps its own analyzers around one shared session.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import onnxruntime as ort
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADState
from pipecat.utils.env import env_truthy

SILERO_MODEL = ("pipecat.audio.vad.data", "silero_vad.onnx")
SILENCE_GATE_OFF_DBFS = -100.0
# Windows skipped by the silence gate that Silero hears before it scores again.
SILENCE_REPLAY_WINDOWS = 3
SMART_TURN_MODEL = ("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx")


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


@dataclass
class TurnModels:
    """The process-wide ONNX sessions for voice activity and end-of-turn detection."""

    silero: ort.InferenceSession
    smart_turn: ort.InferenceSession

    @classmethod
    def load(cls) -> TurnModels:
        return cls(
            silero=_session(_bundled(*SILERO_MODEL), threads=1),
            smart_turn=_session(_bundled(*SMART_TURN_MODEL), threads=1),
        )


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
        self._silence_peak = 0.0
        # The latest windows the model did not hear, replayed to it before it next scores.
        self._skipped: collections.deque[bytes] = collections.deque(maxlen=SILENCE_REPLAY_WINDOWS)
        if silence_dbfs is not None and silence_dbfs > SILENCE_GATE_OFF_DBFS:
            self._silence_peak = 32768 * 10 ** (silence_dbfs / 20)
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = session
        model.sample_rates = [8000, 16000]
        model.reset_states()
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0

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
            window = np.frombuffer(buffer, np.int16)
            # max/min rather than abs(): abs(-32768) overflows int16.
            if len(window) and max(int(window.max()), -int(window.min())) < self._silence_peak:
                self._maybe_reset_model(0.0)
                self._skipped.append(buffer)
                return 0.0
        # The model first hears the quiet just before this window, as it would have: it
        # scores the first words higher after hearing the room.
        while self._skipped:
            super().voice_confidence(self._skipped.popleft())
        return super().voice_confidence(buffer)


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """LocalSmartTurnAnalyzerV3 around a shared session; its audio buffer stays per instance."""

    def __init__(self, *, session: ort.InferenceSession, **kwargs: Any) -> None:
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = env_truthy("PIPECAT_SMART_TURN_LOG_DATA", default=False)
        self._session = session
