"""Piper, streamed: a phrase's audio comes out in pieces, the first long before the rest.

Piper's VITS graph turns a sentence's phonemes into a latent spectrogram (text encoder,
durations, flow: ~40-60 ms on two threads) and then decodes all of it into audio at once
(HiFi-GAN: ~60-130 ms for a 5-13 word phrase, growing with its length). The bot is silent
until that whole decode is done. Here the graph is cut in two where the decoder starts
(its first convolution, `/dec/conv_pre`), and the decoder runs on slices of the latent
frames: a short first slice for the first audio, longer ones after, each with
`CONTEXT_FRAMES` of latent on either side so that its convolutions see what they would
have seen on the whole (measured: 16 frames give the whole decode's samples to within
1e-6; 8 frames to within 6e-4). A phrase's first audio then costs the encoder plus a
~25 ms slice, whatever the phrase's length.

A voice whose graph does not split that way (no `/dec/conv_pre`, or a decoder that needs
more than the latent, as a multi-speaker voice's does) is synthesised whole, as Piper does.

This module imports no Pipecat.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
from piper import PiperVoice
from piper.config import PiperConfig

logger = logging.getLogger(__name__)

DECODER_START = "/dec/conv_pre/Conv"
LATENT = "latent"  # the decoder's input, renamed
# Latent frames in the first slice of a sentence (hop 256 at 22,050 Hz: 11.6 ms each, so
# 0.37 s of audio, played while the next slice is decoded), in each later slice, and of
# context on either side of a slice.
FIRST_FRAMES = 32
NEXT_FRAMES = 128
CONTEXT_FRAMES = 16
# Piper scales each sentence to full scale once all of it is decoded; streamed audio
# cannot wait for its peak, so every sentence gets one gain. The stock voice's sentence
# peaks measured 0.25-0.66 (median 0.53) over 21 phrases: x1.5 keeps them below full
# scale and a typical one ~2 dB below where Piper's own normalisation put it. Louder
# samples are clipped.
GAIN = 1.5


def onnx_session(model: Path | bytes, threads: int) -> ort.InferenceSession:
    """Piper's ONNX session: idle threads sleep instead of spinning, no graph rewriting.

    onnxruntime's default spin-waiting keeps cores busy between calls, which on a small
    machine steals them from llama.cpp generating the rest of the reply.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # onnxruntime's graph optimisations take ~0.7 s of startup on Piper's VITS graph and
    # gain nothing measurable per phrase (182 / 170 / 174 ms for all / basic / none on one
    # sentence, 2 threads), so the graph runs as exported.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _onnx_proto() -> ModuleType:
    """ONNX's generated protobuf classes, without `import onnx`: that also imports
    ml_dtypes, 0.6 s of a server's ~2 s startup; the classes alone take ~10 ms."""
    spec = importlib.util.find_spec("onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("onnx is missing: `pip install -e '.[local]'`", name="onnx")
    path = Path(next(iter(spec.submodule_search_locations))) / "onnx_ml_pb2.py"
    module_spec = importlib.util.spec_from_file_location("ai_operator_onnx_ml_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def split(model: Any) -> tuple[bytes, bytes] | None:
    """A Piper voice's ONNX `ModelProto` cut where its decoder starts: the serialized
    encoder (phonemes -> latent frames) and decoder (`LATENT` -> audio), or None if the
    graph does not cut there into those two. The model is changed in place (it becomes
    the encoder)."""
    graph = model.graph
    start = next((node for node in graph.node if node.name == DECODER_START), None)
    if start is None or len(graph.output) != 1:
        return None
    latent = start.input[0]
    producer = {out: index for index, node in enumerate(graph.node) for out in node.output}
    weight = {tensor.name: index for index, tensor in enumerate(graph.initializer)}
    # The decoder: every node between the latent and the audio, with its weights.
    nodes: set[int] = set()
    weights: set[int] = set()
    stack = [graph.output[0].name]
    while stack:
        tensor = stack.pop()
        if tensor == latent or not tensor:
            continue
        if tensor in weight:
            weights.add(weight[tensor])
        elif tensor in producer:
            if producer[tensor] not in nodes:
                nodes.add(producer[tensor])
                stack.extend(graph.node[producer[tensor]].input)
        else:
            return None  # the decoder needs another input (a speaker's embedding, say)

    decoder = type(model)()
    decoder.ir_version = model.ir_version
    decoder.opset_import.extend(model.opset_import)
    decoder.graph.name = "piper-decoder"
    decoder.graph.node.extend(graph.node[index] for index in sorted(nodes))
    decoder.graph.initializer.extend(graph.initializer[index] for index in sorted(weights))
    decoder.graph.output.extend(graph.output)
    value = decoder.graph.input.add()
    value.name = LATENT
    value.type.tensor_type.elem_type = graph.output[0].type.tensor_type.elem_type
    for node in decoder.graph.node:
        node.input[:] = [LATENT if name == latent else name for name in node.input]

    # The encoder: the rest, with the latent as its output. The decoder's weights go with
    # it, but for the small constants the two parts share.
    for index in sorted(nodes, reverse=True):
        del graph.node[index]
    used = {name for node in graph.node for name in node.input}
    for index in sorted(weights, reverse=True):
        if graph.initializer[index].name not in used:
            del graph.initializer[index]
    del graph.output[:]
    graph.output.add().name = latent
    graph.output[0].type.tensor_type.elem_type = decoder.graph.input[0].type.tensor_type.elem_type
    return model.SerializeToString(), decoder.SerializeToString()


class StreamingPiper:
    """A Piper voice whose `stream(text)` yields int16 PCM piece by piece."""

    def __init__(
        self,
        voice: PiperVoice,
        *,
        encoder: ort.InferenceSession | None = None,
        decoder: ort.InferenceSession | None = None,
    ) -> None:
        self.voice = voice
        self.config: PiperConfig = voice.config
        self._encoder = encoder
        self._decoder = decoder
        self.streams = encoder is not None and decoder is not None

    @classmethod
    def load(cls, path: Path, threads: int) -> StreamingPiper:
        """The voice at `path` (with its .onnx.json beside it), split if it can be."""
        config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text()))
        model = _onnx_proto().ModelProto()
        model.ParseFromString(path.read_bytes())
        parts = split(model)
        del model
        if parts is not None:
            try:
                encoder, decoder = (onnx_session(part, threads) for part in parts)
            except ort.capi.onnxruntime_pybind11_state.Fail as exc:  # type: ignore[attr-defined]
                logger.info("Piper voice %s did not split (%s)", path, exc)
                parts = None
        if parts is None:
            logger.info("Piper voice %s: phrases are synthesised whole", path)
            return cls(PiperVoice(config=config, session=onnx_session(path, threads)))
        # PiperVoice is kept for its phonemizer; its session is the encoder, never run by it.
        return cls(PiperVoice(config=config, session=encoder), encoder=encoder, decoder=decoder)

    def stream(self, text: str) -> Iterator[bytes]:
        """`text`'s audio as int16 PCM at `config.sample_rate`: for each sentence, its
        first `FIRST_FRAMES` latent frames' worth, then `NEXT_FRAMES` at a time."""
        if not self.streams:
            for chunk in self.voice.synthesize(text):
                yield chunk.audio_int16_bytes
            return
        for phonemes in self.voice.phonemize(text):
            if phonemes:
                yield from self._sentence(self.voice.phonemes_to_ids(phonemes))

    def _sentence(self, phoneme_ids: list[int]) -> Iterator[bytes]:
        config = self.config
        scales = (config.noise_scale, config.length_scale, config.noise_w_scale)
        yield from self.decode(self.encode(phoneme_ids, scales))

    def encode(self, phoneme_ids: list[int], scales: tuple[float, float, float]) -> np.ndarray:
        """The latent frames (1 x channels x frames) of one sentence's phoneme ids, for the
        voice's (noise, length, noise_w) `scales`."""
        assert self._encoder is not None
        return self._encoder.run(
            None,
            {
                "input": np.array([phoneme_ids], dtype=np.int64),
                "input_lengths": np.array([len(phoneme_ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
            },
        )[0]

    def decode(self, latent: np.ndarray) -> Iterator[bytes]:
        """`latent`'s audio as int16 PCM: its first `FIRST_FRAMES` frames' worth, then
        `NEXT_FRAMES` at a time, each decoded with `CONTEXT_FRAMES` on either side."""
        assert self._decoder is not None
        frames = latent.shape[2]
        hop = self.config.hop_length
        start, size = 0, FIRST_FRAMES
        while start < frames:
            end = min(frames, start + size)
            low, high = max(0, start - CONTEXT_FRAMES), min(frames, end + CONTEXT_FRAMES)
            audio = self._decoder.run(None, {LATENT: latent[:, :, low:high]})[0].reshape(-1)
            yield to_pcm(audio[(start - low) * hop : (end - low) * hop])
            start, size = end, NEXT_FRAMES


def to_pcm(audio: np.ndarray) -> bytes:
    """The decoder's float audio as int16 PCM, at `GAIN`."""
    return (np.clip(audio * GAIN, -1.0, 1.0) * 32767).astype("<i2").tobytes()
