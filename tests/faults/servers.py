"""Processes and small servers the fault tests start, stop and start again.

* :class:`Child`: ``ctt-broker serve`` or ``worker`` as a child process, its output in a log file.
* :class:`Restartable`: an ASGI app (the Microsoft emulator) on a fixed loopback port that can
  refuse connections and come back.
* :class:`Receiver`: the providers' webhook endpoint, which can be down, then back.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from sandbox.__main__ import ThreadServer
from sandbox.launch import free_port
from tests import http_clients

START_SECONDS = 40.0


def wait_until(condition: Callable[[], object], seconds: float, interval: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true or ``seconds`` pass; returns its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


@dataclass
class Child:
    """A child process whose output goes to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """The last lines it printed, for failure messages."""
        with suppress(OSError):
            return self.log.read_text("utf-8", "replace")[-4000:]
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def spawn(name: str, argv: list[str], env: Mapping[str, str], logs: Path) -> Child:
    """Start ``argv`` with ``env``; stdout and stderr go to ``logs/name.log``."""
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    return Child(name, process, log)


def wait_healthy(child: Child, base_url: str) -> None:
    """Return once ``/health`` answers 200; fail with the child's output otherwise."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        with suppress(httpx.TransportError):
            if http_clients.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not start:\n{child.output()}")
        time.sleep(0.2)


class Restartable:
    """An ASGI app on a fixed loopback port that can go away (connection refused) and return."""

    def __init__(self, name: str, app: Any, port: int) -> None:
        self.name = name
        self.app = app
        self.port = port
        self._server: ThreadServer | None = None

    @property
    def up(self) -> bool:
        """Whether it listens now."""
        return self._server is not None

    def start(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            server = ThreadServer(self.name, self.app, self.port)
            server.start()
            self._server = server

    def stop(self) -> None:
        """Stop listening: new connections are refused."""
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass(frozen=True)
class Delivery:
    """One webhook request the receiver answered."""

    path: str
    webhook_id: str
    event_type: str
    at: float


class Receiver:
    """The providers' webhook endpoint: answers 204 and remembers; can be down, then back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        """``http://127.0.0.1:{port}{path}``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[Delivery]:
        """What arrived at ``path`` so far."""
        with self._lock:
            return [d for d in self.deliveries if d.path == path]

    def start(self) -> None:
        """Listen (again) on the same port."""
        if self._server is not None:
            return
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    event_type = str(json.loads(body).get("type", ""))
                except (ValueError, AttributeError):
                    event_type = ""
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(
                            self.path,
                            self.headers.get("webhook-id", ""),
                            event_type,
                            time.monotonic(),
                        )
                    )
                self.send_response(204)
                self.end_headers()

            def do_GET(self) -> None:  # the provider's callback page
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"back at the provider")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: deliveries are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
