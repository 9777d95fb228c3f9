"""The shared-session analyzers must behave exactly like Pipecat's own."""

from __future__ import annotations

import numpy as np
import pytest
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer

from ai_operator.speech import synthesize_pcm16k
from ai_operator.turn_models import SharedSileroVADAnalyzer, SharedSmartTurnAnalyzer, TurnModels


@pytest.fixture(scope="module")
def models() -> TurnModels:
    return TurnModels.load()


@pytest.fixture(scope="module")
def speech() -> bytes:
    return synthesize_pcm16k("I would like to book a table for two people tomorrow.")


def confidences(analyzer, pcm: bytes) -> list[float]:
    analyzer.set_sample_rate(16000)
    window = analyzer.num_frames_required() * 2
    return [
        analyzer.voice_confidence(pcm[i : i + window])
        for i in range(0, len(pcm) - window, window)
    ]


def test_shared_vad_matches_stock_vad(models, speech):
    stock = confidences(SileroVADAnalyzer(sample_rate=16000), speech)
    shared = confidences(SharedSileroVADAnalyzer(session=models.silero, sample_rate=16000), speech)
    assert np.allclose(stock, shared, atol=1e-5)
    assert max(shared) > 0.9  # it does hear the speech


def test_shared_vad_state_is_per_instance(models, speech):
    a = SharedSileroVADAnalyzer(session=models.silero, sample_rate=16000)
    b = SharedSileroVADAnalyzer(session=models.silero, sample_rate=16000)
    confidences(a, speech)  # a's recurrent state moves; b's must not
    fresh = confidences(SharedSileroVADAnalyzer(session=models.silero, sample_rate=16000), speech)
    assert np.allclose(confidences(b, speech), fresh, atol=1e-5)


def test_shared_smart_turn_matches_stock(models, speech):
    audio = np.frombuffer(speech, dtype=np.int16).astype(np.float32) / 32768.0
    stock = LocalSmartTurnAnalyzerV3(sample_rate=16000)._predict_endpoint(audio)
    shared = SharedSmartTurnAnalyzer(session=models.smart_turn, sample_rate=16000)
    result = shared._predict_endpoint(audio)
    assert result["prediction"] == stock["prediction"]
    assert abs(result["probability"] - stock["probability"]) < 1e-4
