"""Optional WAV recording of both sides of a conversation (`--record-audio`).

Pipecat's `AudioBufferProcessor` sits right after the output transport: there it sees the
caller's audio (as the echo gate let it through) and the bot's audio as it was sent. It
resamples both to `RECORDING_SAMPLE_RATE` and, every `FLUSH_SECS`, hands over stereo PCM
with the caller on the left and the bot on the right, padded with silence so both sides
keep to the wall clock.

Each chunk goes to one writer thread per recording, which appends it to
`<recordings_dir>/<conversation id>.wav` and rewrites the header's lengths. The file on
disk is therefore a complete WAV after every chunk: a crash loses at most the last
`FLUSH_SECS`, and the event loop (the audio path) only ever hands bytes to the thread.
"""

from __future__ import annotations

import asyncio
import logging
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor

from ai_operator.audio import OUTPUT_SAMPLE_RATE, SAMPLE_WIDTH_BYTES

logger = logging.getLogger(__name__)

# The bot speaks at 24 kHz; recording at its rate keeps its voice intact (the caller's
# 16 kHz is upsampled, which costs only disk).
RECORDING_SAMPLE_RATE = OUTPUT_SAMPLE_RATE
RECORDING_CHANNELS = 2  # left: the caller, right: the bot
# How much audio is held in memory before it is written: what a crash can lose.
FLUSH_SECS = 1.0


def recording_path(recordings_dir: Path, conversation_id: str) -> Path:
    """Where the recording of `conversation_id` is written."""
    return recordings_dir / f"{conversation_id}.wav"


class WavAppender:
    """A 16-bit PCM WAV file that is complete on disk after every `append`.

    `wave` rewrites the RIFF and data lengths in the header after each write, and the
    file is flushed to the OS, so a process that dies between appends leaves a valid
    file holding everything appended so far. Blocking: call it from a thread.
    """

    def __init__(self, path: Path, *, sample_rate: int, channels: int) -> None:
        self.path = path
        self._file: BinaryIO = path.open("wb")
        try:
            self._wav = wave.open(self._file, "wb")
            self._wav.setnchannels(channels)
            self._wav.setsampwidth(SAMPLE_WIDTH_BYTES)
            self._wav.setframerate(sample_rate)
            self.append(b"")  # writes the header: a valid, empty file from the start
        except BaseException:
            self._file.close()
            raise

    def append(self, pcm: bytes) -> None:
        self._wav.writeframes(pcm)
        self._file.flush()

    def close(self) -> None:
        """Idempotent; the file stays valid whether or not this is ever called."""
        if self._file.closed:
            return
        try:
            self._wav.close()  # leaves the file object to us: wave did not open it
        finally:
            self._file.close()


class AudioRecording:
    """Records one conversation. Put `processor` after the output transport; `await close()`.

    `on_created(path)` is called (from the writer thread) when the file first exists, so
    history can link it even if the server later dies mid-conversation. A failing disk
    ends the recording with one logged error; the conversation goes on.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_created: Callable[[Path], None] | None = None,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger] = logger,
    ) -> None:
        self.path = path
        self._on_created = on_created
        self._log = log
        self.processor = AudioBufferProcessor(
            sample_rate=RECORDING_SAMPLE_RATE,
            num_channels=RECORDING_CHANNELS,
            buffer_size=int(FLUSH_SECS * RECORDING_SAMPLE_RATE) * SAMPLE_WIDTH_BYTES,
            auto_start_recording=True,  # from the StartFrame; stops itself on End/Cancel
        )
        self.processor.add_event_handler("on_audio_data", self._on_audio_data)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recording")
        self._closing = False
        # Touched only by the writer thread.
        self._wav: WavAppender | None = None
        self._failed = False

    def _on_audio_data(self, _processor: Any, pcm: bytes, _rate: int, _channels: int) -> None:
        # A plain function, not a coroutine: Pipecat runs each call in its own task, and
        # tasks start in the order created, so chunks reach the one-thread queue in order.
        if self._closing:
            self._log.warning("recording: %d bytes arrived after close; dropped", len(pcm))
            return
        self._writer.submit(self._write, pcm)

    def _write(self, pcm: bytes) -> None:
        if self._failed:
            return
        try:
            if self._wav is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._wav = WavAppender(
                    self.path, sample_rate=RECORDING_SAMPLE_RATE, channels=RECORDING_CHANNELS
                )
                if self._on_created is not None:
                    self._on_created(self.path)
            self._wav.append(pcm)
        except OSError as exc:
            self._failed = True
            self._log.error("recording to %s failed, stopped recording: %s", self.path, exc)

    def _close_file(self) -> None:
        if self._wav is None:
            return
        try:
            self._wav.close()
        except OSError as exc:
            self._log.error("recording: closing %s failed: %s", self.path, exc)
        self._wav = None

    async def close(self) -> None:
        """Write everything queued, then close the file; waits on the thread, not the loop.

        Call it after the pipeline has finished: the processor emits its last chunk when
        the End or Cancel frame passes it, and the pipeline's teardown waits for that.
        """
        if self._closing:
            return
        self._closing = True
        try:
            await asyncio.wrap_future(self._writer.submit(self._close_file))
        finally:
            self._writer.shutdown(wait=False)
