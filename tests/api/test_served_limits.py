"""Slow and idle connections against the real server (``ctt-broker serve``, real sockets).

uvicorn has no header-read timeout of its own: the broker's worker closes a
connection that has not delivered a complete request within
``CTT_HEAD_TIMEOUT_SECONDS``, and idle keep-alive connections after
``CTT_KEEP_ALIVE_SECONDS``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import http_clients
from tests.api.test_served import BIN, free_port

pytestmark = pytest.mark.slow

HEAD_TIMEOUT = 2.0
KEEP_ALIVE = 1.0
TRICKLERS = 60


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    data: Path = tmp_path_factory.mktemp("served-limits")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_DATA_DIR": str(data),
        "CTT_PUBLIC_BASE_URL": base,
        "CTT_WORKERS": "1",
        "CTT_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
        "CTT_KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
    }
    cli = shutil.which("ctt-broker", path=str(BIN))
    assert cli
    server = subprocess.Popen(  # noqa: S603
        [cli, "serve", "--bind", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http_clients.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(server.stderr.read().decode() if server.stderr else "")
            time.sleep(0.2)
        yield base, port
    finally:
        server.terminate()
        server.wait(timeout=20)


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None if it stayed open)."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except OSError:
        pass
    return time.monotonic() - start


def test_trickled_headers_do_not_starve_other_clients(strict_server: tuple[str, int]) -> None:
    """Slowloris: 60 connections send a header byte every 0.3 s; a normal client is served.

    Before, each such connection was held as long as it kept trickling (30 s
    and more); now each is closed once the request deadline passes.
    """
    base, port = strict_server
    head = b"GET /health HTTP/1.1\r\nHost: broker\r\nX-Slow: " + b"a" * 200
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(TRICKLERS)]
    opened = time.monotonic()
    stop = threading.Event()
    closed: set[int] = set()

    def trickle() -> None:
        for byte in head:
            for index, sock in enumerate(sockets):
                if index in closed:
                    continue
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    closed.add(index)
            if stop.wait(0.3):
                return

    writer = threading.Thread(target=trickle, daemon=True)
    writer.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        response = httpx.get(f"{base}/health", timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - started < 1.0
        # Every trickling connection is closed within the deadline (plus scheduling slack).
        limit = HEAD_TIMEOUT + 2.0 - (time.monotonic() - opened)
        waits = [closed_within(sock, max(limit, 0.1)) for sock in sockets]
        assert all(wait is not None for wait in waits), waits.count(None)
    finally:
        stop.set()
        writer.join(timeout=5)
        for sock in sockets:
            sock.close()


def test_connection_that_never_sends_is_closed(strict_server: tuple[str, int]) -> None:
    """An attacker opens connections and sends nothing: they do not stay open."""
    _, port = strict_server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        waited = closed_within(sock, HEAD_TIMEOUT + 2.0)
    assert waited is not None


def test_idle_keep_alive_connection_is_closed(strict_server: tuple[str, int]) -> None:
    """After an answer, an idle keep-alive connection is closed after the keep-alive time."""
    _, port = strict_server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: broker\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        waited = closed_within(sock, KEEP_ALIVE + 2.0)
    assert waited is not None


def test_request_head_over_the_callback_limit_is_refused_by_the_server(
    strict_server: tuple[str, int],
) -> None:
    """A 60 KB head (the old limit) is refused by the HTTP parser, before the app runs."""
    base, _ = strict_server
    response = httpx.get(f"{base}/health", headers={"x-big": "a" * 60000}, timeout=5)
    assert response.status_code in (400, 431)


def test_forged_x_forwarded_for_from_a_loopback_peer_does_not_escape_the_per_ip_limit(
    strict_server: tuple[str, int],
) -> None:
    """Before, uvicorn rewrote the client address from X-Forwarded-For for any loopback
    peer, so each forged value got a fresh admin budget. Only CTT_TRUSTED_PROXIES (unset
    here) may make the broker believe that header."""
    base, _ = strict_server
    statuses = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for n in range(75):  # the default admin budget is 60 a minute per client IP
            forged = {"X-Forwarded-For": f"203.0.113.{n % 250 + 1}"}
            handle = f"{n:02d}" + "B" * 41  # a new link each time: no per-link limit applies
            statuses.append(client.get("/actions/" + handle, headers=forged).status_code)
    assert 429 in statuses, statuses
    assert statuses.index(429) <= 61
