"""Silero VAD and Smart Turn v3 with their ONNX sessions loaded once per process.

Pipecat's analyzers load their model in every instance: about 20 MB and 50 ms per
conversation. An onnxruntime `InferenceSession` is safe to call from several threads, and
the per-conversation state (Silero's recurrent state, Smart Turn's audio buffer) lives in
the analyzer objects, so each conversation keeps its own analyzers around one shared session.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import onnxruntime as ort
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer
from pipecat.utils.env import env_truthy

SILERO_MODEL = ("pipecat.audio.vad.data", "silero_vad.onnx")
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
    """SileroVADAnalyzer around a shared session; its recurrent state stays per instance."""

    def __init__(self, *, session: ort.InferenceSession, **kwargs: Any) -> None:
        VADAnalyzer.__init__(self, **kwargs)
        model = SileroOnnxModel.__new__(SileroOnnxModel)
        model.session = session
        model.sample_rates = [8000, 16000]
        model.reset_states()
        self._model = model
        self._windows_since_reset = 0
        self._low_confidence_windows = 0


class SharedSmartTurnAnalyzer(LocalSmartTurnAnalyzerV3):
    """LocalSmartTurnAnalyzerV3 around a shared session; its audio buffer stays per instance."""

    def __init__(self, *, session: ort.InferenceSession, **kwargs: Any) -> None:
        BaseSmartTurn.__init__(self, **kwargs)
        self._log_data = env_truthy("PIPECAT_SMART_TURN_LOG_DATA", default=False)
        self._session = session
