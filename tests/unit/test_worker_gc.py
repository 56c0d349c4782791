"""The server worker freezes what its app's startup built, once, and changes nothing else."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
import uvicorn
from uvicorn.lifespan.on import LifespanOn
from uvicorn_worker import UvicornWorker

from broker.runtime import Runtime
from broker.settings import Settings
from handlers import worker
from handlers.app import create_app
from handlers.worker import BrokerWorker, FreezeAfterStartup


def recording_gc(monkeypatch: pytest.MonkeyPatch, calls: list[str]) -> None:
    """``handlers.worker``'s view of ``gc``, noting collect and freeze (the real ones untouched)."""

    def collect() -> int:
        calls.append("gc.collect")
        return 0

    monkeypatch.setattr(
        worker, "gc", SimpleNamespace(collect=collect, freeze=lambda: calls.append("gc.freeze"))
    )


def run(scenario: Callable[[], Any]) -> Any:
    # On a thread of its own: a browser test may hold an event loop on this worker's main thread.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(anyio.run, scenario).result()


def lifespan_app(calls: list[str], startup: dict[str, Any] | Exception) -> Any:
    """An ASGI app whose startup answers ``startup`` (or raises it); it also serves HTTP."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(f"app {scope['type']}")
        if scope["type"] == "lifespan":
            await receive()
            if isinstance(startup, Exception):
                raise startup
            await send(startup)
            if startup["type"] == "lifespan.startup.complete":
                await receive()
                await send({"type": "lifespan.shutdown.complete"})
        else:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    return app


def drive(app: Any, calls: list[str]) -> None:
    """A server's lifespan (startup, then shutdown if started) and one HTTP request."""
    lifespan = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(lifespan)

    async def send(message: Any) -> None:
        calls.append(f"server got {message['type']}")

    async def receive_http() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def scenario() -> None:
        try:
            await app({"type": "lifespan"}, receive, send)
        except RuntimeError as exc:
            calls.append(f"startup raised {exc}")
        await app({"type": "http"}, receive_http, send)

    run(scenario)


HTTP = ["app http", "server got http.response.start", "server got http.response.body"]


def test_a_started_app_is_frozen_once_before_the_server_hears_it_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    recording_gc(monkeypatch, calls)
    drive(FreezeAfterStartup(lifespan_app(calls, {"type": "lifespan.startup.complete"})), calls)
    assert calls == [
        "app lifespan",
        # Everything startup built exists by now; the server sends traffic only after this.
        "gc.collect",
        "gc.freeze",
        "server got lifespan.startup.complete",
        "server got lifespan.shutdown.complete",
        *HTTP,  # requests pass through untouched, and never freeze again
    ]


@pytest.mark.parametrize(
    "startup",
    [{"type": "lifespan.startup.failed", "message": "no database"}, RuntimeError("boom")],
    ids=["startup-failed", "startup-raises"],
)
def test_an_app_whose_startup_fails_is_never_frozen(
    monkeypatch: pytest.MonkeyPatch, startup: dict[str, Any] | Exception
) -> None:
    calls: list[str] = []
    recording_gc(monkeypatch, calls)
    drive(FreezeAfterStartup(lifespan_app(calls, startup)), calls)
    assert "gc.freeze" not in calls and "gc.collect" not in calls
    assert calls[0] == "app lifespan"
    assert calls[1] in ("server got lifespan.startup.failed", "startup raised boom")
    assert calls[2:] == HTTP


def test_the_broker_app_under_uvicorn_is_frozen_once_after_connexion_built_its_stack(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, runtime: Runtime
) -> None:
    app = create_app(settings, runtime)  # a fresh app: nothing built before its startup
    stack_built_at_freeze: list[bool] = []
    monkeypatch.setattr(
        worker,
        "gc",
        SimpleNamespace(
            collect=lambda: 0,
            freeze=lambda: stack_built_at_freeze.append(
                app.middleware.middleware_stack is not None
            ),
        ),
    )
    # The worker's uvicorn settings that matter here: lifespan on, no proxy-header layer.
    config = uvicorn.Config(FreezeAfterStartup(app), lifespan="on", proxy_headers=False)
    config.load()
    lifespan = LifespanOn(config)

    async def scenario() -> bool:
        await lifespan.startup()
        failed = lifespan.startup_failed
        await lifespan.shutdown()
        return failed

    assert run(scenario) is False
    assert stack_built_at_freeze == [True]


def test_the_worker_class_serves_its_app_through_the_freeze(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = object()

    def load(self: Any) -> None:  # gunicorn's step, without a real app
        self.wsgi = loaded

    monkeypatch.setattr(UvicornWorker, "load_wsgi", load)
    broker_worker = BrokerWorker.__new__(BrokerWorker)
    broker_worker.load_wsgi()
    assert isinstance(broker_worker.wsgi, FreezeAfterStartup)
    assert broker_worker.wsgi.app is loaded
