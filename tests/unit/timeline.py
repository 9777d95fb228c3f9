"""A simulated VAD for scripted-timeline tests of the turn strategies.

Frames are 20 ms of input audio; the strategies read the VAD's state per frame, as they
do from Silero in the pipeline, so a test sets *when* speech starts and stops.
"""

from __future__ import annotations

from pipecat.audio.vad.vad_analyzer import VADParams, VADState

FRAME = 0.02
START_SECS = 0.2
STOP_SECS = 0.2
SILENCE = bytes(640)


class SimulatedVAD:
    """Counts speech/silence frames like Pipecat's VADAnalyzer (start_secs / stop_secs)."""

    def __init__(self) -> None:
        self.params = VADParams(start_secs=START_SECS, stop_secs=STOP_SECS)
        self.latest_state = VADState.QUIET
        self._run = 0

    def feed(self, voiced: bool) -> None:
        state = self.latest_state
        if voiced:
            if state in (VADState.QUIET, VADState.STARTING):
                self._run = self._run + 1 if state is VADState.STARTING else 1
                done = self._run * FRAME >= START_SECS - 1e-9
                self.latest_state = VADState.SPEAKING if done else VADState.STARTING
            else:
                self.latest_state = VADState.SPEAKING
        elif state in (VADState.SPEAKING, VADState.STOPPING):
            self._run = self._run + 1 if state is VADState.STOPPING else 1
            done = self._run * FRAME >= STOP_SECS - 1e-9
            self.latest_state = VADState.QUIET if done else VADState.STOPPING
        else:
            self.latest_state = VADState.QUIET
