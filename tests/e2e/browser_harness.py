"""Headless Chromium for the web client's tests, and the pages served as the server serves them.

- `chromium()`: Debian's Chromium with a fake microphone (and, by default, the microphone
  allowed), a fresh profile each time, console and page errors collected.
- `serve_web(api)`: the page at `/`, the history page at `/history`, the files at
  `/static/<name>`, and `api` (path -> JSON, or (status, JSON)) for the history page's
  `/api/...` routes, without the real server.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import ai_operator

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / ".artifacts"
WEB_DIR = Path(ai_operator.__file__).resolve().parent / "web"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1200, "height": 820}
PHONE_VIEWPORT = {"width": 390, "height": 844}

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
ALLOW_MIC = "--use-fake-ui-for-media-stream"


def closed_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------
# The pages and a scripted JSON API
# ---------------------------------------------------------------------------------------

Api = Mapping[str, Any]


class _WebHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, api: Api, **kwargs: Any) -> None:
        self.api = api
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        route = self.path.split("?", 1)[0].split("#", 1)[0]
        if route.startswith("/api/"):
            self._json(route)
        else:
            super().do_GET()

    def _json(self, route: str) -> None:
        answer = self.api.get(route, (404, {"error": "not found"}))
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def translate_path(self, path: str) -> str:
        route = path.split("?", 1)[0].split("#", 1)[0]
        if route == "/":
            return str(WEB_DIR / "index.html")
        if route == "/history":
            return str(WEB_DIR / "history.html")
        if route.startswith("/static/"):
            return super().translate_path(route[len("/static") :])
        return str(WEB_DIR / "__not_found__")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@contextlib.contextmanager
def serve_web(api: Api | None = None) -> Iterator[str]:
    """Serve the pages (and `api`); yields the origin, e.g. http://127.0.0.1:40123."""
    handler = functools.partial(_WebHandler, api=api or {}, directory=str(WEB_DIR))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="web-static", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


# ---------------------------------------------------------------------------------------
# Chromium
# ---------------------------------------------------------------------------------------


@dataclass
class Tab:
    page: Any
    hook: str = "__aiop"
    console: list[str] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return dict(self.page.evaluate(f"() => JSON.parse(JSON.stringify(window.{self.hook}))"))

    def wait(self, predicate: str, timeout_ms: int, what: str) -> None:
        """Wait for a JS predicate over the page's test hook (`a`) and `document`.

        Fails with the page's state and console, so a timeout says what the page was doing.
        """
        try:
            self.page.wait_for_function(
                f"() => {{ const a = window.{self.hook}; return Boolean(a && ({predicate})); }}",
                timeout=timeout_ms,
            )
        except Exception as exc:
            pytest.fail(
                f"page never reached: {what} ({type(exc).__name__})\n"
                f"state: {json.dumps(self.state(), indent=1)}\n"
                "console:\n" + "\n".join(self.console[-40:]),
                pytrace=False,
            )

    def text(self, selector: str) -> str:
        return str(self.page.locator(selector).inner_text())

    def screenshot(self, name: str, *, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.evaluate("() => document.activeElement && document.activeElement.blur()")
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    def page_errors(self) -> list[str]:
        return [line for line in self.console if line.startswith("pageerror")]


@contextlib.contextmanager
def chromium(
    *, allow_mic: bool = True, fake_mic: Path | None = None, hook: str = "__aiop"
) -> Iterator[Tab]:
    from playwright.sync_api import sync_playwright

    args = list(CHROMIUM_ARGS)
    if allow_mic:
        args.append(ALLOW_MIC)
    if fake_mic is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_mic}")
    with sync_playwright() as pw:
        # launch() uses a fresh temporary profile (user data dir) every time.
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            tab = Tab(page, hook=hook)
            page.on("console", lambda m: tab.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: tab.console.append(f"pageerror: {e}"))
            yield tab
        finally:
            browser.close()
