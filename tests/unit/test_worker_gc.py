"""The server worker freezes what its app's startup built, and nothing else changes."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import pytest
from uvicorn_worker import UvicornWorker

from handlers.worker import BrokerWorker, FreezeAfterStartup


class RecordingApp:
    """An ASGI app that answers lifespan and HTTP scopes, noting what it saw."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(f"app {scope['type']}")
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})


def run(scenario: Any) -> Any:
    # On a thread of its own: a browser test may hold an event loop on this worker's main thread.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(anyio.run, scenario).result()


def test_a_server_worker_freezes_after_its_app_started_never_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("gc.collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("gc.freeze"))
    app = FreezeAfterStartup(RecordingApp(calls))
    lifespan = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(lifespan)

    async def send(message: Any) -> None:
        calls.append(f"server got {message['type']}")

    async def receive_http() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def scenario() -> None:
        await app({"type": "lifespan"}, receive, send)
        await app({"type": "http"}, receive_http, send)

    run(scenario)
    assert calls == [
        "app lifespan",
        # Everything startup built exists before the freeze; the server hears "started" after.
        "gc.collect",
        "gc.freeze",
        "server got lifespan.startup.complete",
        "server got lifespan.shutdown.complete",
        "app http",
        "server got http.response.start",
        "server got http.response.body",
    ]


def test_the_worker_class_serves_its_app_through_the_freeze(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = object()

    def load(self: Any) -> None:  # gunicorn's step, without a real app
        self.wsgi = loaded

    monkeypatch.setattr(UvicornWorker, "load_wsgi", load)
    worker = BrokerWorker.__new__(BrokerWorker)
    worker.load_wsgi()
    assert isinstance(worker.wsgi, FreezeAfterStartup)
    assert worker.wsgi.app is loaded
