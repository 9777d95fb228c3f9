from __future__ import annotations

import subprocess
import sys

import pytest

from ai_operator.config import Settings
from ai_operator.errors import ModelNotFoundError
from ai_operator.providers.local_models import locate_gguf, locate_piper_voice, locate_whisper_model


def test_default_models_ship_in_installed_packages():
    s = Settings(_env_file=None)
    assert (locate_whisper_model(s) / "model.bin").stat().st_size > 10_000_000
    assert locate_gguf(s).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    voice = locate_piper_voice(s)
    assert voice.name == "en_US-joe-medium.onnx"
    assert voice.with_name(voice.name + ".json").is_file()


def test_custom_paths_are_used(tmp_path):
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    s = Settings(_env_file=None, llm_gguf=gguf)
    assert locate_gguf(s) == gguf


@pytest.mark.parametrize(
    ("field", "locate", "hint"),
    [
        ("whisper_model", locate_whisper_model, "AI_OPERATOR_WHISPER_MODEL"),
        ("llm_gguf", locate_gguf, "AI_OPERATOR_LLM_GGUF"),
        ("piper_voice", locate_piper_voice, "AI_OPERATOR_PIPER_VOICE"),
    ],
)
def test_missing_model_names_the_setting(tmp_path, field, locate, hint):
    s = Settings(_env_file=None, **{field: tmp_path / "nope"})
    with pytest.raises(ModelNotFoundError, match=hint):
        locate(s)


def test_long_conversations_are_trimmed_to_the_context_window():
    from ai_operator.providers.local_llm import fit_to_context

    def words(text: str) -> int:
        return len(text.split())

    system = {"role": "system", "content": "be brief " * 10}
    history = []
    for i in range(50):
        history.append({"role": "user", "content": f"question {i} " * 10})
        history.append({"role": "assistant", "content": f"answer {i} " * 10})
    history.append({"role": "user", "content": "latest question"})
    kept = fit_to_context([system, *history], words, budget=200)
    assert kept[0] is system and kept[-1]["content"] == "latest question"
    assert kept[1]["role"] == "user"
    assert sum(words(m["content"]) + 4 for m in kept) <= 200
    assert len(kept) > 3  # it keeps as much recent conversation as fits
    short = [system, {"role": "user", "content": "hi"}]
    assert fit_to_context(short, words, budget=200) == short
    # The greeting opens a conversation: it stays while everything fits (without it in
    # the context, SmolLM2 answered "What is the capital of France?" in French).
    greeting = {"role": "assistant", "content": "Hello!"}
    greeted = [system, greeting, {"role": "user", "content": "hi"}]
    assert fit_to_context(greeted, words, budget=200) == greeted


def test_the_models_load_without_pipecat():
    """The server loads the models in a thread while its main thread imports Pipecat and
    the web app; that overlap holds only while loading them needs none of it."""
    code = (
        "import sys\n"
        "import ai_operator.providers.local_models\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pipecat', 'fastapi', 'openai'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
