"""AI Operator: a real-time voice conversation server built on Pipecat."""

import os

# Before anything imports numpy: its OpenBLAS starts a thread per core for a matrix product
# (Smart Turn's and Whisper's mel filterbanks) and leaves them spinning for work after each
# one. On the capacity benchmark's 2-core machine that spinning thread took ~8 % of a core
# per worker process, at the event loop's priority; these products are small enough that
# one thread is as quick. A value the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
