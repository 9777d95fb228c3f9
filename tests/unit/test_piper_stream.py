"""Piper streamed: the voice cut in two, its audio decoded a slice at a time."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from ai_operator.config import Settings
from ai_operator.providers.local_models import locate_piper_voice
from ai_operator.providers.piper_stream import (
    DECODER_START,
    FIRST_FRAMES,
    NEXT_FRAMES,
    StreamingPiper,
    onnx_session,
    to_pcm,
)

LONG = "The weather in London can vary greatly depending on the time of year and the wind."


@pytest.fixture(scope="module")
def stock_path() -> Path:
    return locate_piper_voice(Settings(_env_file=None))


@pytest.fixture(scope="module")
def voice(stock_path: Path) -> StreamingPiper:
    return StreamingPiper.load(stock_path, threads=2)


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int32)


def test_the_stock_voice_streams_the_same_audio_as_the_whole_graph(voice, stock_path):
    """With the noise scales at zero the graph is deterministic: the encoder plus the
    decoder run slice by slice give the samples the uncut graph gives for the sentence."""
    assert voice.streams
    ids = voice.voice.phonemes_to_ids(voice.voice.phonemize(LONG)[0])
    scales = (0.0, voice.config.length_scale, 0.0)
    pieces = list(voice.decode(voice.encode(ids, scales)))

    whole = onnx_session(stock_path, threads=2).run(
        None,
        {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array(scales, dtype=np.float32),
        },
    )[0]
    expected = samples(to_pcm(whole.reshape(-1)))
    streamed = samples(b"".join(pieces))
    assert len(streamed) == len(expected)
    assert np.abs(streamed - expected).max() <= 2  # int16 steps: float rounding only
    assert np.abs(expected).max() > 5000  # it is speech, not silence that trivially matches

    hop = voice.config.hop_length
    assert len(pieces) >= 3  # ~3.5 s of speech: a first slice and at least two more
    assert len(samples(pieces[0])) == FIRST_FRAMES * hop
    assert all(len(samples(p)) == NEXT_FRAMES * hop for p in pieces[1:-1])


def test_a_phrase_of_two_sentences_streams_each_in_turn(voice):
    first, second = (b"".join(voice.stream(t)) for t in ("Sure.", "I can help with that."))
    both = list(voice.stream("Sure. I can help with that."))
    # Each sentence's audio length is set by its predicted durations, which carry noise:
    # compare the total with a generous margin.
    total = len(b"".join(both))
    assert 0.8 * (len(first) + len(second)) < total < 1.2 * (len(first) + len(second))
    # The first piece is the first sentence's first slice, not the whole phrase.
    assert len(both[0]) <= FIRST_FRAMES * voice.config.hop_length * 2


def test_a_voice_that_does_not_split_is_synthesised_whole(stock_path, tmp_path):
    model = onnx.load(str(stock_path))
    for node in model.graph.node:
        if node.name == DECODER_START:
            node.name = "/elsewhere/Conv"
    path = tmp_path / stock_path.name
    onnx.save(model, str(path))
    shutil.copy(f"{stock_path}.json", f"{path}.json")

    voice = StreamingPiper.load(path, threads=1)
    assert not voice.streams
    pieces = list(voice.stream(LONG))
    assert len(pieces) == 1  # one sentence, one piece, as Piper gives it
    assert np.abs(samples(pieces[0])).max() > 5000
