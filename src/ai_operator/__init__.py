"""AI Operator: a real-time voice conversation server built on Pipecat."""

__version__ = "0.1.0"
