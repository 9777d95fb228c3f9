"""What the scripted caller says, synthesized with the bundled Piper voice.

Piper pads each clip with near-silence at both ends, so the moment the caller *stops
speaking* is not the end of the clip: `speech_bounds` finds the first and last 20 ms
frame with audible energy, and the harness measures from the frame that carried the last
speech sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ai_operator.audio import AUDIBLE_RMS, INPUT_FRAME_BYTES, SAMPLE_WIDTH_BYTES

# Short, different questions a caller might ask; each gets a one- or two-sentence answer.
QUESTIONS: tuple[str, ...] = (
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Can you recommend a good book to read?",
    "What is the weather usually like in London?",
    "How do I boil an egg?",
    "Who wrote Romeo and Juliet?",
    "What is the tallest mountain in the world?",
    "Tell me a fun fact about octopuses.",
    "How far away is the moon?",
    "What should I cook for dinner tonight?",
)

# Barge-in: a prompt that draws a long answer, then a question spoken over it.
LONG_ANSWER_PROMPT = "Please tell me a long story about a brave little dragon."
INTERRUPTION = "Stop please and tell me what time it is."


@dataclass(frozen=True)
class Clip:
    """One utterance as 16 kHz mono int16 PCM, with where the speech inside it lies."""

    text: str
    pcm: bytes
    first_speech_frame: int  # index of the first 20 ms frame with audible energy
    last_speech_frame: int  # index of the last one

    @property
    def frames(self) -> int:
        return -(-len(self.pcm) // INPUT_FRAME_BYTES)


def frame_levels(pcm: bytes, frame_bytes: int = INPUT_FRAME_BYTES) -> np.ndarray:
    """RMS level of each `frame_bytes` frame of int16 PCM (the last one zero-padded)."""
    usable = len(pcm) - len(pcm) % SAMPLE_WIDTH_BYTES
    samples = np.frombuffer(pcm[:usable], dtype="<i2").astype(np.float32)
    per_frame = frame_bytes // SAMPLE_WIDTH_BYTES
    padded = np.zeros(-(-len(samples) // per_frame) * per_frame, dtype=np.float32)
    padded[: len(samples)] = samples
    frames = padded.reshape(-1, per_frame)
    return np.asarray(np.sqrt(np.mean(frames * frames, axis=1)))


def speech_bounds(
    pcm: bytes, frame_bytes: int = INPUT_FRAME_BYTES, threshold: float = AUDIBLE_RMS
) -> tuple[int, int]:
    """Indices of the first and last frame whose RMS reaches `threshold`.

    Raises ValueError for a clip with no audible frame: it cannot be a question.
    """
    loud = np.flatnonzero(frame_levels(pcm, frame_bytes) >= threshold)
    if loud.size == 0:
        raise ValueError("no audible speech in clip")
    return int(loud[0]), int(loud[-1])


def make_clip(text: str) -> Clip:
    from ai_operator.speech import synthesize_pcm16k

    pcm = synthesize_pcm16k(text)
    first, last = speech_bounds(pcm)
    return Clip(text=text, pcm=pcm, first_speech_frame=first, last_speech_frame=last)


def make_clips(texts: tuple[str, ...] | list[str]) -> list[Clip]:
    """Synthesize every clip up front, so no synthesis competes with a measured run."""
    return [make_clip(t) for t in texts]
