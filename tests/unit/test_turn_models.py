"""The shared-session analyzers must behave exactly like Pipecat's own."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from ai_operator.barge_in import ObservedVAD
from ai_operator.speech import synthesize_pcm16k
from ai_operator.turn_models import (
    MAX_NICE,
    SILENCE_REPLAY_WINDOWS,
    SMART_TURN_NICE,
    SharedSileroVADAnalyzer,
    SharedSmartTurnAnalyzer,
    TurnModels,
    usable_cpus,
)


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
        np.asarray(analyzer.voice_confidence(pcm[i : i + window])).item()
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


def quiet_noise(peak_dbfs: float, samples: int) -> bytes:
    rng = np.random.default_rng(7)
    peak = 32768 * 10 ** (peak_dbfs / 20)
    return (rng.uniform(-1, 1, samples) * peak).astype(np.int16).tobytes()


async def vad_states(analyzer, pcm: bytes) -> list[VADState]:
    """The VAD's state after each 20 ms frame, as the user aggregator sees it."""
    analyzer.set_sample_rate(16000)
    analyzer.set_params(VADParams(start_secs=0.12, stop_secs=0.2, min_volume=0.2))
    return [await analyzer.analyze_audio(pcm[i : i + 640]) for i in range(0, len(pcm), 640)]


async def test_observed_vad_tells_its_listeners_each_state_as_it_is_reached(models, speech):
    vad = ObservedVAD(session=models.silero, sample_rate=16000)
    heard: list[tuple[VADState, float]] = []
    vad.add_listener(lambda state, secs: heard.append((state, secs)))
    pcm = bytes(16000) + speech + bytes(32000)
    states = await vad_states(vad, pcm)
    assert [state for state, _ in heard] == states
    assert VADState.SPEAKING in states and VADState.STOPPING in states
    assert sum(secs for _, secs in heard) == pytest.approx(len(pcm) / 32000)


def gated(models, dbfs: float = -60) -> SharedSileroVADAnalyzer:
    return SharedSileroVADAnalyzer(session=models.silero, silence_dbfs=dbfs, sample_rate=16000)


def plain(models) -> SharedSileroVADAnalyzer:
    return SharedSileroVADAnalyzer(session=models.silero, sample_rate=16000)


def onsets(states: list[VADState], after: int) -> int:
    """The first frame at or after `after` where the VAD reports speech."""
    return next(i for i in range(after, len(states)) if states[i] == VADState.SPEAKING)


async def test_silence_gate_keeps_the_vads_decisions(models, speech):
    """Noise-suppressed hush, the clip (whose gaps between words are digital silence), hush,
    the clip again: the gate skips the model in the hush, yet speech starts within a frame
    or two of when it does without the gate (the model's state differs a little at the
    first words, so they may differ by a window either way), and lasts as long."""
    hush = quiet_noise(-66, 16000)
    call = hush + speech + hush + speech + hush
    with_gate = await vad_states(gated(models), call)
    without = await vad_states(plain(models), call)
    second = (len(hush) + len(speech) + len(hush)) // 640
    for start in (0, second):
        assert abs(onsets(with_gate, start) - onsets(without, start)) <= 2
    speaking = [s.count(VADState.SPEAKING) for s in (with_gate, without)]
    assert abs(speaking[0] - speaking[1]) <= 0.05 * speaking[1]


class CountingModel:
    """Silero's model, counting the windows it scores."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, 0

    def __call__(self, x, sr):
        self.calls += 1
        return self.model(x, sr)

    def reset_states(self) -> None:
        self.model.reset_states()


async def test_silence_gate_skips_the_model_only_in_quiet_near_silence(models):
    vad = gated(models)
    vad._model = counting = CountingModel(vad._model)
    await vad_states(vad, quiet_noise(-66, 16000))
    assert counting.calls == 0  # a second of hush: the model never ran
    await vad_states(vad, quiet_noise(-50, 16000))
    # Louder than the gate: every 32 ms window is scored, after the last hushed ones.
    assert counting.calls == SILENCE_REPLAY_WINDOWS + 31
    assert gated(models, dbfs=-100)._silence_peak == 0  # -100 dBFS turns the gate off


async def test_vad_analyses_on_the_calling_thread(models, speech):
    """No per-frame hop to a thread: the analyzer's executor is never used."""
    vad = plain(models)
    await vad_states(vad, speech)
    assert not vad._executor._threads


# --- Smart Turn run early, at the start of the pause -----------------------------------

STOP_SECS = 0.15
FRAME_BYTES = 640  # 20 ms at 16 kHz


class ScriptedVAD:
    """The pipeline VAD's state, set by the test frame by frame."""

    def __init__(self) -> None:
        self.params = VADParams(stop_secs=STOP_SECS)
        self.latest_state = VADState.QUIET


class CountingSmartTurn(SharedSmartTurnAnalyzer):
    """Records the length of every audio segment the model is run on."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_sample_rate(16000)  # as the pipeline does when it starts
        self.runs: list[int] = []

    def _predict_endpoint(self, audio: np.ndarray) -> dict:
        self.runs.append(len(audio))
        return super()._predict_endpoint(audio)


def speak(analyzer, vad: ScriptedVAD, pcm: bytes, state: VADState) -> None:
    """`pcm` in 20 ms frames, the VAD in `state`, before the VAD's stop (is_speech)."""
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        vad.latest_state = state
        analyzer.append_audio(pcm[i : i + FRAME_BYTES], True)


def pause() -> bytes:
    """The VAD's `stop_secs` of room noise after the words."""
    return quiet_noise(-55, int(STOP_SECS * 16000))


async def test_early_smart_turn_gives_the_verdict_of_the_vad_stop(models, speech):
    words = speech[: len(speech) // FRAME_BYTES * FRAME_BYTES]
    at_stop, early = CountingSmartTurn(session=models.smart_turn), None
    vad = ScriptedVAD()
    speak(at_stop, vad, words, VADState.SPEAKING)
    speak(at_stop, vad, pause(), VADState.STOPPING)
    state, result = await at_stop.analyze_end_of_turn()

    vad = ScriptedVAD()
    early = CountingSmartTurn(session=models.smart_turn, vad=vad)
    speak(early, vad, words, VADState.SPEAKING)
    speak(early, vad, pause(), VADState.STOPPING)
    early_state, early_result = await early.analyze_end_of_turn()

    assert early.early_runs == 1
    assert len(early.runs) == 1 and abs(early.runs[0] - at_stop.runs[0]) <= 320  # as much audio
    assert early_state == state
    assert abs(early_result.probability - result.probability) < 0.05


def pause_then_go_on(analyzer, vad: ScriptedVAD, speech: bytes) -> None:
    """Half the words, a pause long enough to start the early run, the other half."""
    words = speech[: len(speech) // FRAME_BYTES * FRAME_BYTES]
    half = len(words) // 2 // FRAME_BYTES * FRAME_BYTES
    speak(analyzer, vad, words[:half], VADState.SPEAKING)
    speak(analyzer, vad, pause()[:FRAME_BYTES], VADState.STOPPING)  # early run starts
    assert analyzer.early_runs == 1
    speak(analyzer, vad, words[half:], VADState.SPEAKING)  # the user goes on


async def test_speech_after_the_early_run_discards_it(models, speech):
    vad = ScriptedVAD()
    analyzer = CountingSmartTurn(session=models.smart_turn, vad=vad)
    pause_then_go_on(analyzer, vad, speech)
    speak(analyzer, vad, pause(), VADState.STOPPING)
    await analyzer.analyze_end_of_turn()
    assert analyzer.early_runs == 2
    # The verdict is the second early run's, on all the words: no run at the stop.
    assert len(analyzer.runs) == 2 and analyzer.runs[1] > analyzer.runs[0]


async def test_without_the_vad_smart_turn_runs_at_the_stop(models, speech):
    analyzer = CountingSmartTurn(session=models.smart_turn)
    vad = ScriptedVAD()
    speak(analyzer, vad, speech[: len(speech) // FRAME_BYTES * FRAME_BYTES], VADState.SPEAKING)
    speak(analyzer, vad, pause(), VADState.STOPPING)
    assert analyzer.runs == []
    await analyzer.analyze_end_of_turn()
    assert len(analyzer.runs) == 1


async def test_conversations_share_the_smart_turn_threads(models, speech):
    """Verdicts run on the process-wide pool, at most one per thread at a time, instead
    of on a thread per conversation."""
    running, peak, threads = 0, 0, set()
    lock = threading.Lock()

    class Tracked(SharedSmartTurnAnalyzer):
        def _predict_endpoint(self, audio):
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)
                threads.add(threading.current_thread().name)
            try:
                return super()._predict_endpoint(audio)
            finally:
                with lock:
                    running -= 1

    pool = ThreadPoolExecutor(1, thread_name_prefix="shared-turn")
    words = speech[: len(speech) // FRAME_BYTES * FRAME_BYTES]
    analyzers = [Tracked(session=models.smart_turn, executor=pool) for _ in range(3)]
    for analyzer in analyzers:
        speak(analyzer, ScriptedVAD(), words, VADState.SPEAKING)
    verdicts = await asyncio.gather(*(a.analyze_end_of_turn() for a in analyzers))
    assert len(verdicts) == 3 and all(result is not None for _, result in verdicts)
    assert peak == 1 and threads == {"shared-turn_0"}
    assert all(a._executor is None for a in analyzers)  # no thread of their own
    pool.shutdown()


async def test_the_early_run_waits_for_its_quiet(models, speech):
    vad = ScriptedVAD()
    analyzer = CountingSmartTurn(session=models.smart_turn, vad=vad, quiet_secs=0.06)
    words = speech[: len(speech) // FRAME_BYTES * FRAME_BYTES]
    speak(analyzer, vad, words, VADState.SPEAKING)
    speak(analyzer, vad, pause()[: 2 * FRAME_BYTES], VADState.STOPPING)  # a dip in a word
    assert analyzer.early_runs == 0
    speak(analyzer, vad, words[-FRAME_BYTES:], VADState.SPEAKING)
    speak(analyzer, vad, pause()[: 2 * FRAME_BYTES], VADState.STOPPING)
    assert analyzer.early_runs == 0  # the quiet counts afresh after speech
    speak(analyzer, vad, pause()[:FRAME_BYTES], VADState.STOPPING)
    assert analyzer.early_runs == 1
    speak(analyzer, vad, pause(), VADState.STOPPING)
    assert analyzer.early_runs == 1  # one per pause
    await analyzer.analyze_end_of_turn()


def volumes(vad, pcm: bytes, window: int) -> list[float]:
    """The VAD's smoothed volume after each window, as its analysis loop keeps it."""
    vad.set_sample_rate(16000)
    out = []
    for i in range(0, len(pcm) - window + 1, window):
        vad._prev_volume = vad._get_smoothed_volume(pcm[i : i + window])
        out.append(vad._prev_volume)
    return out


def stock_volumes(pcm: bytes, window: int) -> list[float]:
    return volumes(SileroVADAnalyzer(sample_rate=16000), pcm, window)


def tone(freq: float, rms_dbfs: float, samples: int) -> bytes:
    t = np.arange(samples) / 16000
    amplitude = 32768 * 10 ** (rms_dbfs / 20) * np.sqrt(2)
    return (amplitude * np.sin(2 * np.pi * freq * t)).round().astype(np.int16).tobytes()


def test_volume_skips_only_blocks_that_read_zero(models, speech):
    """The volume with the quiet-block shortcut is Pipecat's, window for window: through
    digital silence, speech, and the loudest quiet signals that read 0 (a tone near
    Nyquist, where the K-weighting gains most, and noise) just above and below the gate."""
    silence = bytes(16000)
    call = b"".join(
        [
            silence,
            speech,
            silence,
            tone(7900, -75, 16000),  # below the gate (0), but measured: above -80 dBFS
            tone(7900, -66, 16000),  # above it
            quiet_noise(-66, 16000),
            tone(7900, -82, 16000),  # skipped
            speech,
            silence,
        ]
    )
    window = 512 * 2
    shared = SharedSileroVADAnalyzer(session=models.silero, sample_rate=16000)
    ours = volumes(shared, call, window)
    stock = stock_volumes(call, window)
    assert np.allclose(ours, stock, atol=1e-9)
    assert max(stock) > 0.5 and sum(v < 1e-3 for v in stock) > 25  # loud and quiet both


def test_volume_is_not_measured_in_digital_silence(models, monkeypatch, speech):
    measured = []
    import pipecat.audio.volume as volume_module

    real = volume_module.calculate_audio_volume
    monkeypatch.setattr(
        volume_module, "calculate_audio_volume", lambda *a: measured.append(1) or real(*a)
    )
    shared = SharedSileroVADAnalyzer(session=models.silero, sample_rate=16000)
    volumes(shared, bytes(32000), 1024)
    assert measured == []
    volumes(shared, speech, 1024)
    assert measured  # speech is measured


async def test_an_early_run_still_queued_is_dropped_when_the_user_goes_on(models, speech):
    """On a busy server the early verdict waits for a free Smart Turn thread; if the user
    speaks again first, it is never run."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="busy-turn")
    busy = threading.Event()
    pool.submit(busy.wait)  # another conversation's verdict holds the only thread
    vad = ScriptedVAD()
    analyzer = CountingSmartTurn(session=models.smart_turn, vad=vad, executor=pool)
    pause_then_go_on(analyzer, vad, speech)  # its early run waits for the thread
    busy.set()
    speak(analyzer, vad, pause(), VADState.STOPPING)
    state, result = await analyzer.analyze_end_of_turn()
    assert result is not None and analyzer.early_runs == 2
    assert len(analyzer.runs) == 1  # only the second pause's run: the first never ran
    pool.shutdown()


def _thread_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_smart_turn_threads_yield_to_the_loop_when_asked():
    own = _thread_nice()
    lowered = TurnModels.load(smart_turn_nice=SMART_TURN_NICE)
    plain = TurnModels.load()
    try:
        assert lowered.smart_turn_executor.submit(_thread_nice).result() == min(
            MAX_NICE, own + SMART_TURN_NICE
        )
        assert plain.smart_turn_executor.submit(_thread_nice).result() == own
        assert _thread_nice() == own  # the caller's thread (the event loop's) keeps its own
    finally:
        lowered.smart_turn_executor.shutdown()
        plain.smart_turn_executor.shutdown()


def test_smart_turn_gets_the_threads_it_is_given():
    """A worker of several gets its share of the CPUs (__main__); alone, one per CPU."""
    shared = TurnModels.load(threads=1)
    alone = TurnModels.load()
    try:
        assert shared.smart_turn_executor._max_workers == 1
        assert alone.smart_turn_executor._max_workers == usable_cpus()
    finally:
        shared.smart_turn_executor.shutdown()
        alone.smart_turn_executor.shutdown()


DIP_SECS = 0.04


def silence(frames: int) -> bytes:
    return bytes(frames * FRAME_BYTES)


def up_to_last_word(speech: bytes) -> bytes:
    """`speech` up to its last 20 ms frame louder than the dip level (Piper pads its end)."""
    frames = np.frombuffer(speech[: len(speech) // FRAME_BYTES * FRAME_BYTES], np.int16)
    levels = np.sqrt((frames.reshape(-1, FRAME_BYTES // 2).astype(np.float64) ** 2).mean(1))
    last = int(np.flatnonzero(levels >= 100)[-1])
    return speech[: (last + 1) * FRAME_BYTES]


async def test_a_dip_in_the_audio_starts_the_early_run_before_the_vads_pause(models, speech):
    """With `dip_secs` (the local Whisper's early pass starts there too), the verdict
    starts once the audio has been silent that long, while Silero still says SPEAKING; at
    the stop it is the verdict, as one started on the VAD's pause would be."""
    words = up_to_last_word(speech)
    at_stop = CountingSmartTurn(session=models.smart_turn)
    vad = ScriptedVAD()
    speak(at_stop, vad, words + silence(2), VADState.SPEAKING)
    speak(at_stop, vad, silence(8), VADState.STOPPING)
    state, result = await at_stop.analyze_end_of_turn()

    vad = ScriptedVAD()
    early = CountingSmartTurn(session=models.smart_turn, vad=vad, dip_secs=DIP_SECS)
    speak(early, vad, words + silence(1), VADState.SPEAKING)
    started = early.early_runs
    speak(early, vad, silence(1), VADState.SPEAKING)
    assert early.early_runs == started + 1  # 40 ms of silence, the VAD still on speech
    speak(early, vad, silence(8), VADState.STOPPING)
    assert early.early_runs == started + 1  # the VAD's pause starts no second run
    early_state, early_result = await early.analyze_end_of_turn()
    assert early_state == state
    assert abs(early_result.probability - result.probability) < 0.05
    assert early.runs[-1] <= at_stop.runs[0]  # on the audio up to the dip, padded


async def test_words_after_a_dip_discard_its_early_run(models, speech):
    words = speech[: len(speech) // FRAME_BYTES * FRAME_BYTES]
    half = len(words) // 2 // FRAME_BYTES * FRAME_BYTES
    vad = ScriptedVAD()
    analyzer = CountingSmartTurn(session=models.smart_turn, vad=vad, dip_secs=DIP_SECS)
    speak(analyzer, vad, words[:half] + silence(2), VADState.SPEAKING)
    assert analyzer._early is not None
    loud = (np.frombuffer(words[:half], np.int16).astype(np.int32) * 4).clip(-32768, 32767)
    speak(analyzer, vad, loud.astype(np.int16).tobytes()[-4 * FRAME_BYTES :], VADState.SPEAKING)
    assert analyzer._early is None  # the user goes on
    # Silent audio Silero calls speech after it had called it a pause: speech again.
    speak(analyzer, vad, silence(2), VADState.SPEAKING)
    speak(analyzer, vad, silence(1), VADState.STOPPING)
    assert analyzer._early is not None
    speak(analyzer, vad, silence(1), VADState.SPEAKING)
    assert analyzer._early is None
    await analyzer.analyze_end_of_turn()
