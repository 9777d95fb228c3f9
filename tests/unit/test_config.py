from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ai_operator.__main__ import build_parser, main
from ai_operator.config import ConfigError, Settings, env_var_name, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_local_and_loopback(monkeypatch):
    s = load_settings(env_file=None)
    assert (s.stt, s.llm, s.tts) == ("local", "local", "local")
    assert s.host == "127.0.0.1" and s.port == 8000


def test_environment_and_overrides(monkeypatch):
    monkeypatch.setenv("AI_OPERATOR_PORT", "9001")
    monkeypatch.setenv("AI_OPERATOR_LLM_MAX_TOKENS", "42")
    s = load_settings({"port": 9100}, env_file=None)
    assert s.port == 9100  # CLI beats environment
    assert s.llm_max_tokens == 42


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    env = tmp_path / ".env"
    env.write_text("AI_OPERATOR_GREETING=Hi there\nOPENAI_API_KEY=sk-test\n")
    s = load_settings(env_file=str(env))
    assert s.greeting == "Hi there"
    assert s.openai_api_key is not None and s.openai_api_key.get_secret_value() == "sk-test"


def test_invalid_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("AI_OPERATOR_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="AI_OPERATOR_PORT"):
        load_settings(env_file=None)


@pytest.mark.parametrize(
    ("flags", "missing"),
    [
        ({"stt": "deepgram"}, "DEEPGRAM_API_KEY"),
        ({"llm": "openai"}, "OPENAI_API_KEY"),
        ({"tts": "cartesia"}, "CARTESIA_API_KEY"),
        ({"preset": "seed"}, "DEEPGRAM_API_KEY"),
    ],
)
def test_cloud_stage_without_key_fails_naming_the_key(flags, missing, monkeypatch):
    for var in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match=missing):
        load_settings(flags, env_file=None)


def test_openai_compatible_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    s = load_settings(
        {"llm": "openai", "openai_base_url": "http://127.0.0.1:8080/v1"}, env_file=None
    )
    assert s.llm == "openai"


def test_seed_preset_selects_the_original_trio(monkeypatch):
    for var in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(var, "k")
    s = load_settings({"preset": "seed"}, env_file=None)
    assert (s.stt, s.llm, s.tts) == ("deepgram", "openai", "cartesia")
    assert s.openai_model == "gpt-4o"
    assert s.cartesia_voice == "71a7ad14-091c-4e8e-a314-022ece01c121"


def test_cli_missing_key_is_one_line_not_a_traceback(capsys, monkeypatch):
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    assert main(["serve", "--tts", "cartesia", "--env-file", "/dev/null"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "CARTESIA_API_KEY" in err


def test_cli_missing_model_is_one_line_not_a_traceback(capsys, monkeypatch):
    monkeypatch.setenv("AI_OPERATOR_LLM_GGUF", "/nonexistent/model.gguf")
    assert main(["serve", "--env-file", "/dev/null", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "/nonexistent/model.gguf" in err
    assert "AI_OPERATOR_LLM_GGUF" in err


def test_help_explains_every_option():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    help_text = serve.format_help()
    for name, field in Settings.model_fields.items():
        if field.annotation is not None and "SecretStr" in str(field.annotation):
            assert env_var_name(name) in help_text  # secrets are explained, env-only
            continue
        assert "--" + name.replace("_", "-") in help_text, name


def test_env_example_documents_every_variable():
    example = (ROOT / ".env.example").read_text()
    for name in Settings.model_fields:
        assert env_var_name(name) in example, f"{env_var_name(name)} missing from .env.example"


def test_preset_fills_only_stages_not_set(monkeypatch):
    for var in ("DEEPGRAM_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(var, "k")
    s = load_settings({"preset": "seed", "llm": "local"}, env_file=None)
    assert (s.stt, s.llm, s.tts) == ("deepgram", "local", "cartesia")
    monkeypatch.setenv("AI_OPERATOR_TTS", "local")
    s = load_settings({"preset": "seed", "llm": "local"}, env_file=None)
    assert s.tts == "local"


def test_ready_time_counts_from_the_process_start():
    """The "ready in X s" figure includes the interpreter and the imports before `serve`: a new
    process reports an age covering at least the imports it timed itself."""
    code = (
        "import time; t = time.perf_counter()\n"
        "import ai_operator.__main__ as cli\n"
        "imports = time.perf_counter() - t\n"
        "print(cli._process_age_secs(time.perf_counter()), imports)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    age, imports = map(float, out.stdout.split())
    assert imports - 0.02 <= age < 60  # /proc counts in 10 ms ticks
