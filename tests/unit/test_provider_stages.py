"""Which local models a server loads, whether any stage runs on them, and the providers'
modules loaded at startup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ai_operator import providers
from ai_operator.__main__ import main
from ai_operator.config import Settings
from ai_operator.errors import MissingPackageError
from ai_operator.providers import import_providers, needs_local_models, runs_local_stage

CLOUD = {"stt": "deepgram", "llm": "openai", "tts": "cartesia"}


@pytest.mark.parametrize("stage", ["stt", "llm", "tts"])
def test_one_local_stage_runs_local_models(stage):
    settings = Settings(_env_file=None, failover=False, **{**CLOUD, stage: "local"})
    assert runs_local_stage(settings) and needs_local_models(settings)


def test_failover_loads_the_local_models_but_runs_no_stage_on_them():
    settings = Settings(_env_file=None, failover=True, **CLOUD)
    assert needs_local_models(settings)  # standing by for a cloud stage that fails
    assert not runs_local_stage(settings)  # so Smart Turn may yield to the event loop


def test_all_cloud_without_failover_needs_no_local_model():
    settings = Settings(_env_file=None, failover=False, **CLOUD)
    assert not needs_local_models(settings) and not runs_local_stage(settings)


def test_the_configured_providers_modules_load_before_the_first_session():
    """A server imports them at startup, before freezing its heap (heap.py); in a fresh
    interpreter, as a server starts."""
    code = (
        "import sys\n"
        "from ai_operator.config import Settings\n"
        "from ai_operator.providers import import_providers\n"
        "mod = 'pipecat.services.deepgram.stt'\n"
        "assert mod not in sys.modules\n"
        f"import_providers(Settings(_env_file=None, failover=False, **{CLOUD!r}))\n"
        "print(mod in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "True"


def _without_deepgram_sdk(monkeypatch):
    # As if the SDK behind the provider were not installed.
    monkeypatch.setitem(
        providers._FACTORIES, ("stt", "deepgram"), "ai_operator_missing_sdk_for_tests:stt"
    )


def test_a_missing_provider_package_is_named_at_startup(monkeypatch):
    _without_deepgram_sdk(monkeypatch)
    with pytest.raises(MissingPackageError, match="stt provider 'deepgram'.*missing_sdk"):
        import_providers(Settings(_env_file=None, failover=False, **CLOUD))


def test_the_server_says_which_package_is_missing_and_exits(monkeypatch, capsys):
    _without_deepgram_sdk(monkeypatch)
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "CARTESIA_API_KEY"):
        monkeypatch.setenv(key, "test-key")
    argv = ["serve", "--env-file", "/dev/null", "--no-failover", "--port", "0"]
    argv += [f"--{stage}={name}" for stage, name in CLOUD.items()]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ai-operator: stt provider 'deepgram'" in err and "Traceback" not in err
