"""SIGTERM, as an orchestrator sends it, to real ``ctt-broker serve`` and ``worker`` processes.

``serve`` stops taking connections at once and answers the requests in flight;
``worker`` finishes the webhook attempt in flight and records it, so no lease is
left to run out and no provider gets the same webhook twice because of a deploy.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from broker import cli
from broker.db import webhook_deliveries
from broker.events import emit_event
from broker.runtime import open_runtime
from broker.settings import load_settings
from sandbox.launch import free_port
from tests.faults.servers import spawn, wait_healthy, wait_until

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
CLI = shutil.which("ctt-broker", path=str(BIN)) or "ctt-broker"


def broker_env(tmp_path: Path, port: int) -> dict[str, str]:
    import os

    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_MODE": "sandbox",
        "CTT_DATABASE_URL": f"sqlite:///{tmp_path / 'broker.sqlite3'}",
        "CTT_DATA_DIR": str(tmp_path / "data"),
        "CTT_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "CTT_GRACEFUL_TIMEOUT_SECONDS": "10",
        "CTT_LOG_LEVEL": "INFO",
    }


def run_cli(env: dict[str, str], *argv: str) -> str:
    out, err = StringIO(), StringIO()
    assert cli.main(list(argv), env=env, out=out, err=err) == 0, err.getvalue()
    return out.getvalue()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def test_sigterm_refuses_new_connections_and_answers_the_request_in_flight(
    tmp_path: Path,
) -> None:
    """A deploy stops an instance while a request is half sent: it still gets answered."""
    port = free_port()
    env = broker_env(tmp_path, port)
    (tmp_path / "logs").mkdir()
    server = spawn(
        "serve",
        [CLI, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        env,
        tmp_path / "logs",
    )
    try:
        wait_healthy(server, f"http://127.0.0.1:{port}")
        body = b'{"name": "Contoso", "externalId": "c1"}'
        head = (
            f"POST /enterprises HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=15)
        in_flight.sendall(head + body[:5])
        time.sleep(0.5)  # the app is now reading the body
        server.process.send_signal(signal.SIGTERM)
        assert wait_until(lambda: refused(port), 5), "still accepting after SIGTERM"
        in_flight.sendall(body[5:])
        answer = b""
        while chunk := in_flight.recv(65536):
            answer += chunk
        in_flight.close()
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line == b"HTTP/1.1 401 Unauthorized", answer[:300]
        assert server.process.wait(timeout=15) == 0, server.output()
    finally:
        server.stop()


class SlowReceiver:
    """A webhook endpoint that takes ``delay`` seconds to answer 200."""

    def __init__(self, delay: float) -> None:
        self.started = threading.Event()
        self.answered = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                receiver.started.set()
                time.sleep(delay)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                receiver.answered.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_receiver() -> Iterator[SlowReceiver]:
    receiver = SlowReceiver(delay=3.0)
    yield receiver
    receiver.close()


def test_sigterm_lets_the_worker_finish_the_webhook_in_flight(
    tmp_path: Path, slow_receiver: SlowReceiver
) -> None:
    """A deploy stops the worker mid-delivery: the attempt completes and is recorded."""
    env = broker_env(tmp_path, free_port())
    run_cli(env, "db", "upgrade")
    created = json.loads(
        run_cli(
            env,
            "provider",
            "create",
            "Acme",
            "--development",
            "--webhook-url",
            slow_receiver.url,
            "--json",
        )
    )
    runtime = open_runtime(load_settings(env), with_microsoft=False)
    try:
        with runtime.engine.begin() as connection:
            emit_event(
                connection,
                runtime,
                created["providerId"],
                "actionItem.failed",
                {"actionItemId": "act_1", "errorCode": "ACCESS_DENIED"},
            )
        (tmp_path / "logs").mkdir()
        worker = spawn("worker", [CLI, "worker", "--interval", "0.5"], env, tmp_path / "logs")
        try:
            assert slow_receiver.started.wait(20), worker.output()
            worker.process.send_signal(signal.SIGTERM)
            assert worker.process.wait(timeout=15) == 0, worker.output()
        finally:
            worker.stop()
        assert slow_receiver.answered.is_set()
        assert "deliveries in flight finished" in worker.output()
        with runtime.engine.connect() as connection:
            row = connection.execute(select(webhook_deliveries)).mappings().one()
        assert (row["status"], row["last_status_code"]) == ("delivered", 200)
    finally:
        runtime.engine.dispose()
