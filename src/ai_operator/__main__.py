"""Command line: `ai-operator serve [options]`. The only place logging is configured.

Every option comes from a field of `config.Settings`, so `--help` always lists all of them
with the environment variable that sets each one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import types
import typing
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pydantic import SecretStr

from ai_operator import __version__, heap
from ai_operator.config import ConfigError, Settings, env_var_name, load_settings
from ai_operator.errors import MissingPackageError, ModelNotFoundError
from ai_operator.logcontext import SESSION_ID

if typing.TYPE_CHECKING:
    from ai_operator.workers import SessionSlots

logger = logging.getLogger("ai_operator")


class _SessionDefault(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "session"):
            record.session = SESSION_ID.get()
        return True


def configure_logging(level: str, settings: Settings | None = None) -> None:
    """Stderr logging with the session id on every line and configured secrets redacted."""
    from ai_operator.security import SecretRedactor

    redactor = SecretRedactor.from_settings(settings) if settings is not None else None
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_SessionDefault())
    if redactor:
        handler.addFilter(redactor.log_filter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)-7s [%(session)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Pipecat logs through loguru: its lines go to the same handler (same format, session
    # id), warnings and up unless debugging.
    from loguru import logger as loguru_logger

    loguru_logger.remove()
    if redactor:
        loguru_logger.configure(patcher=redactor.loguru_patcher())  # type: ignore[arg-type]
    loguru_logger.add(
        _to_logging,
        level="DEBUG" if level == "debug" else "WARNING",
        format="{message}",
        filter=lambda record: _STOP_SECS_ADVICE not in record["message"],
    )


# Pipecat warns in every conversation that VAD stop_secs 0.15 s differs from its 0.2 s: a
# setting we chose on measurement (see --vad-stop-secs), so the advice is left out.
_STOP_SECS_ADVICE = "differs from the recommended default"


def _to_logging(message: Any) -> None:
    """A loguru sink that hands each record to the `logging` logger of its module."""
    record = message.record
    exception = record["exception"]
    logging.getLogger(record["name"] or "pipecat").log(
        record["level"].no,
        "%s",
        record["message"],
        exc_info=(exception.type, exception.value, exception.traceback) if exception else None,
    )


def _is_secret(annotation: Any) -> bool:
    return SecretStr in typing.get_args(annotation) or annotation is SecretStr


def _secret_env_vars() -> list[str]:
    return [
        env_var_name(name)
        for name, field in Settings.model_fields.items()
        if _is_secret(field.annotation)
    ]


def _add_settings_options(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        if _is_secret(field.annotation):
            continue  # keys only from the environment / .env: argv is visible to other users
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} [env {env_var_name(name)}; default: {default!r}]"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        annotation = field.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
        elif args and typing.get_origin(args[0]) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(args[0]))
        elif annotation in (int, float):
            kwargs["type"] = annotation
        elif isinstance(annotation, types.UnionType) or args:
            kwargs["metavar"] = "PATH" if "Path" in str(annotation) else "VALUE"
        parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ai-operator",
        description="AI Operator: talk with an AI in your browser, locally or via cloud providers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="start the voice server",
        description=(
            "Start the voice server. Options override environment variables and .env; "
            f"secrets ({', '.join(_secret_env_vars())}) are read only from the environment "
            "or .env, never from the command line."
        ),
    )
    serve.add_argument("--env-file", default=".env", help="dotenv file to read [default: .env]")
    _add_settings_options(serve)

    history = sub.add_parser(
        "history",
        help="list stored conversations or export one as JSON",
        description="Read the conversation history (AI_OPERATOR_HISTORY_PATH).",
    )
    history.add_argument("--env-file", default=".env", help="dotenv file to read [default: .env]")
    history.add_argument(
        "--history-path",
        dest="history_path",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="SQLite history file [env AI_OPERATOR_HISTORY_PATH]",
    )
    history.add_argument("--export", metavar="ID", help="print conversation ID as JSON")
    history.add_argument("--limit", type=int, default=20, help="conversations to list [20]")
    return parser


def history_command(settings: Settings, export: str | None, limit: int) -> int:
    """`ai-operator history`: a listing, or one conversation as JSON on stdout."""
    import json

    from ai_operator.history import HistoryStore

    if not settings.history_path.exists():
        print(f"ai-operator: no history at {settings.history_path}", file=sys.stderr)
        return 1
    store = HistoryStore(settings.history_path)
    try:
        if export:
            convo = store.conversation(export)
            if convo is None:
                print(f"ai-operator: no conversation {export!r}", file=sys.stderr)
                return 1
            print(json.dumps(convo, indent=2))
            return 0
        for c in store.conversations(limit):
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["started_at"]))
            first = (c["first_user_text"] or "").strip()[:60]
            print(f"{c['id']}  {started}  {c['turns']:3d} turns  {first}")
        return 0
    finally:
        store.close()


def serve(settings: Settings) -> int:
    """Run the server in this process or, with `--workers N`, in N forked ones."""
    if settings.workers == 1:
        _serve_worker(settings)
        return 0
    from ai_operator.workers import SessionSlots, bind, run_workers, use_shared_metrics

    use_shared_metrics()  # before anything imports prometheus_client
    if settings.history_enabled:
        from ai_operator.history import HistoryStore

        HistoryStore.prepare(settings.history_path)
    sock = bind(settings.host, settings.port)
    slots = SessionSlots(settings.workers)
    print(
        f"AI Operator {__version__}: {settings.workers} worker processes on port "
        f"{settings.port}, each loading its models",
        flush=True,
    )
    return run_workers(
        settings.workers,
        sock,
        lambda index: _serve_worker(settings, fd=sock.fileno(), index=index, slots=slots),
    )


def _serve_worker(
    settings: Settings,
    *,
    fd: int | None = None,
    index: int = 0,
    slots: SessionSlots | None = None,
) -> None:
    """Load the models and serve: on `settings.port`, or on the shared socket `fd`.

    The local models load in a thread of their own while this one imports Pipecat and the
    web app: loading is mostly native code that releases the GIL (ready ~0.3 s sooner on
    2 vCPUs).
    """
    from ai_operator.providers import (
        Resources,
        import_providers,
        needs_local_models,
        runs_local_stage,
    )

    if slots is not None:
        slots.worker = index
    # The first worker speaks for all of them; the others say only when they are ready.
    announce = index == 0
    started = time.perf_counter()
    local: Future[Any] | None = None
    if needs_local_models(settings):
        from ai_operator.providers.local_models import load_local_models, start_warm_up

        def progress(step: str) -> None:
            if announce:
                print(f"  … {step}", flush=True)

        if announce:
            print("Loading local models (weights ship inside the installed packages):", flush=True)
        loader = ThreadPoolExecutor(1, thread_name_prefix="load-models")
        local = loader.submit(load_local_models, settings, progress)
        loader.shutdown(wait=False)

    import uvicorn

    from ai_operator.server import create_app
    from ai_operator.turn_models import SMART_TURN_NICE, TurnModels, usable_cpus

    # Every stage in the cloud (failover's local models only stand by): many calls per
    # core, and the event loop carries them all.
    nice = 0 if runs_local_stage(settings) else SMART_TURN_NICE
    threads = max(1, usable_cpus() // settings.workers)  # the workers' together: one per CPU
    resources = Resources(turn=TurnModels.load(smart_turn_nice=nice, threads=threads))
    # The configured providers' modules load now, not in the first call (the three cloud
    # SDKs are some 850 modules: that call's worker would stall on them), and so before
    # `heap.settle()` freezes what is loaded: left to the first call, their ~66,000 objects
    # stayed in the heap that every full collection walks, 40 % of it at 20 calls a worker.
    import_providers(settings)
    if settings.history_enabled:
        from ai_operator.history import HistoryStore

        resources.history = HistoryStore(settings.history_path)
    if local is not None:
        # The sessions' Pipecat services for the models (the factories import it lazily).
        import ai_operator.providers.local  # noqa: F401
        import ai_operator.providers.local_llm  # noqa: F401

        resources.local = local.result()
    app = create_app(settings, resources, slots)
    if resources.local is not None:
        start_warm_up(resources.local, settings)
    ready_secs = _process_age_secs(started)

    if not announce:
        print(f"  worker {index} ready in {ready_secs:.1f} s", flush=True)
    else:
        _print_banner(settings, resources, ready_secs)
    options: dict[str, Any] = {
        "log_level": "warning",
        "ws_max_size": max(settings.max_message_bytes * 4, 1 << 20),
        # Raw PCM hardly compresses, and deflating 50 audio messages a second per caller
        # cost ~4 % of the event loop in the capacity benchmark.
        "ws_per_message_deflate": False,
        "lifespan": "off",
        "timeout_graceful_shutdown": 5,
    }
    heap.settle()
    try:
        if fd is None:
            uvicorn.run(app, host=settings.host, port=settings.port, **options)
        else:
            from ai_operator.workers import BalancedServer

            assert slots is not None
            BalancedServer(uvicorn.Config(app, **options), fd=fd, slots=slots).run()
    finally:
        if resources.history is not None:
            resources.history.close()  # commits what is still queued


def _process_age_secs(fallback_start: float) -> float:
    """Seconds since this process started (Linux: /proc), so "ready in" includes the
    interpreter and every import; elsewhere, since `fallback_start` (perf_counter)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # Field 22 (after the parenthesised command name) is the start time in ticks.
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return float(uptime.read().split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - fallback_start


def _print_banner(settings: Settings, resources: Any, ready_secs: float) -> None:
    from ai_operator.providers import describe
    from ai_operator.security import is_loopback_host

    shown_host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
    print(f"AI Operator {__version__} ready in {ready_secs:.1f} s", flush=True)
    for stage, line in describe(settings, resources).items():
        print(f"  {stage}: {line}", flush=True)
    if settings.record_audio:
        where = settings.recordings_dir / "<conversation id>.wav"
        print(f"  recording: both sides of every conversation to {where}", flush=True)
    print(f"  open http://{shown_host}:{settings.port} in your browser", flush=True)
    if not settings.token and not is_loopback_host(settings.host):
        print(
            f"  WARNING: listening on {settings.host} without a token: anyone who can reach "
            "this port can use the bot (set AI_OPERATOR_TOKEN or --token)",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    env_file = args.pop("env_file", ".env")
    export, limit = args.pop("export", None), args.pop("limit", 20)
    try:
        settings = load_settings(args, env_file=env_file)
    except ConfigError as exc:
        print(f"ai-operator: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings)
    if command == "history":
        return history_command(settings, export, limit)
    try:
        return serve(settings)
    except (ModelNotFoundError, MissingPackageError) as exc:
        print(f"ai-operator: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
