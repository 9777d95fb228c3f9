"""Regenerate .env.example from config.Settings (the test suite checks it stays complete)."""

from pathlib import Path

from ai_operator.config import Settings, env_var_name

HEADER = """\
# AI Operator configuration. Copy to .env and uncomment what you change.
# Every variable can also be given on the command line: see `ai-operator serve --help`.
#
# The seed system (Deepgram + OpenAI GPT-4o + Cartesia "British Reading Lady") in three lines:
#   AI_OPERATOR_PRESET=seed
#   DEEPGRAM_API_KEY=...   OPENAI_API_KEY=...   CARTESIA_API_KEY=...
# Any OpenAI-compatible server as the LLM (vLLM, Ollama, llama.cpp server):
#   AI_OPERATOR_LLM=openai
#   AI_OPERATOR_OPENAI_BASE_URL=http://localhost:11434/v1
#   AI_OPERATOR_OPENAI_MODEL=llama3.2
"""


def render() -> str:
    lines = [HEADER]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default is None else str(default).replace(str(Path.home()), "~")
        if "\n" in shown:
            shown = shown.replace("\n", " ")
        lines.append(f"# {field.description}")
        lines.append(f"# {env_var_name(name)}={shown}")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    Path(".env.example").write_text(render())
