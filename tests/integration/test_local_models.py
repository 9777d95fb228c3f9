"""Loading the local models, and their warm-up on each model's executor."""

from __future__ import annotations

from concurrent.futures import wait

from ai_operator.config import Settings
from ai_operator.providers.local_models import load_local_models, start_warm_up


def test_each_model_is_warmed_up_on_its_own_executor_before_any_session_work():
    steps: list[str] = []
    models = load_local_models(Settings(_env_file=None), steps.append)
    try:
        assert [s.split(":")[0] for s in steps] == [
            "loading speech-to-text",
            "loading LLM",
            "loading text-to-speech",
        ]
        assert models.warm_up == []  # started by the server once its app is built
        start_warm_up(models, Settings(_env_file=None))
        stt, llm, tts = models.warm_up
        # A session's first call to a model queues behind that model's warm-up.
        executors = (models.stt_executor, models.llm_executor, models.tts_executor)
        for run, executor in zip((stt, llm, tts), executors, strict=True):
            assert executor.submit(run.done).result(timeout=120)
        done, _ = wait(models.warm_up, timeout=0)
        assert len(done) == 3 and all(run.exception() is None for run in done)
        # The LLM kept the evaluated opening (system prompt and greeting) for the first answer.
        assert models.llama.n_tokens > 20
    finally:
        models.close()
        models.llama.close()
