"""A STAND-IN for a team's webhook receiver (a chat's incoming webhook): a local HTTP server that
takes apprise's JSON notifications (`json://127.0.0.1:PORT/alerts`), prints one line per message
and keeps them. For tests and the demo only.

`POST /<anything>` with a JSON body: the message, answered 200 (or, while `hang_s` is set, only
after that many seconds: a channel that hangs). `GET /__standin__/messages` returns the messages
received, oldest first; `POST /__standin__/hang` with `{"seconds": N}` sets the hang.

    python -m standins.webhook_standin --port 8603
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: WebhookStandin


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/__standin__/messages"):
            self._answer(200, self.server.standin.messages)
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._answer(400, {"error": "not JSON"})
            return
        if self.path.startswith("/__standin__/hang"):
            standin.hang_s = float(body.get("seconds") or 0)
            self._answer(200, {"hang_s": standin.hang_s})
            return
        if standin.hang_s > 0 and standin.release.wait(standin.hang_s):
            pass  # released early (the stand-in stops)
        with standin.lock:
            standin.messages.append({"path": self.path, **body})
        if standin.echo:
            print(f"webhook stand-in: {body.get('title')} | {body.get('message')!r}", flush=True)
        self._answer(200, {"ok": True})


class WebhookStandin:
    """The receiver in a background thread: `with WebhookStandin() as hook: hook.url ...`."""

    def __init__(self, *, port: int = 0, hang_s: float = 0.0, echo: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.hang_s = hang_s
        self.echo = echo
        self.release = threading.Event()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.standin = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def apprise_url(self) -> str:
        """The apprise URL of this receiver (apprise's generic JSON webhook)."""
        return f"json://127.0.0.1:{self.port}/alerts"

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.messages)

    def start(self) -> WebhookStandin:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="webhook-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8603)
    args = parser.parse_args()
    standin = WebhookStandin(port=args.port, echo=True)
    print(f"webhook stand-in at {standin.apprise_url}", flush=True)
    standin._server.serve_forever()


if __name__ == "__main__":
    main()
