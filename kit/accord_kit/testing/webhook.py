"""A real HTTP receiver for webhook tests (stdlib `http.server` in a thread, on a free port):
it answers each request as its script says — a status, "hang" (answers nothing until the
test ends or `release()`), or "close" (drops the connection) — then 200 once the script is
used up, and keeps every request it got (headers and body)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from accord_kit.testing.nats import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        """Whether the Accord-Signature header is HMAC-SHA256(secret, timestamp + "." + body)."""
        stamp = self.headers.get("accord-timestamp", "")
        expected = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("accord-signature", ""))


class Receiver:
    def __init__(self, script: list[int | str] | None = None) -> None:
        self.script: list[int | str] = list(script or [])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    action = receiver.script.pop(0) if receiver.script else 200
                if action == "hang":
                    receiver._released.wait(60)
                    self.close_connection = True
                    return
                if action == "close":
                    self.close_connection = True
                    self.connection.close()
                    return
                self.send_response(int(action))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
