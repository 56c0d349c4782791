"""The gunicorn worker class ``ctt-broker serve`` runs, and its HTTP protocol.

Limits that only the HTTP server can enforce, read from the settings:

- the request head the parser accepts is as large as Microsoft's callback
  needs (:data:`handlers.middleware.MAX_REQUEST_HEAD_BYTES`), not more; the
  request guard then applies the smaller limits of every other route;
- a connection must deliver a complete request within
  ``CTT_HEAD_TIMEOUT_SECONDS`` of connecting or of its previous answer, or it
  is closed: uvicorn has no such timeout, and a client sending its headers a
  byte at a time would otherwise hold the connection for ever;
- idle keep-alive connections close after ``CTT_KEEP_ALIVE_SECONDS``;
- beyond ``CTT_MAX_CONNECTIONS`` open connections, new requests get 503.

Once its app has started, the worker also hides what startup built from the
garbage collector (:class:`FreezeAfterStartup`).
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any, ClassVar

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

from broker.settings import load_settings
from handlers.middleware import MAX_REQUEST_HEAD_BYTES

# States in which the client has sent a whole request (or can send no more).
_REQUEST_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR, h11.SWITCHED_PROTOCOL)


class DeadlineH11Protocol(H11Protocol):
    """Uvicorn's h11 protocol with a deadline on receiving each complete request."""

    head_timeout_seconds: ClassVar[float] = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._request_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_request_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Between requests uvicorn's keep-alive timer governs; bytes of a next
        # request cancel it, and data_received arms our deadline again.
        self._disarm_request_deadline()
        self._watch_request_after_response()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_request_deadline()
        super().connection_lost(exc)

    def _watch_request(self) -> None:
        if self.conn.their_state in _REQUEST_RECEIVED:
            self._disarm_request_deadline()
        elif self._request_deadline is None:
            self._arm_request_deadline()

    def _watch_request_after_response(self) -> None:
        # A pipelined request already buffered is under way: it gets a deadline.
        if self.conn.their_state not in _REQUEST_RECEIVED and self.conn.trailing_data[0]:
            self._arm_request_deadline()

    def _arm_request_deadline(self) -> None:
        self._disarm_request_deadline()
        self._request_deadline = self.loop.call_later(
            self.head_timeout_seconds, self._request_deadline_passed
        )

    def _disarm_request_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None

    def _request_deadline_passed(self) -> None:
        self._request_deadline = None
        if self.conn.their_state not in _REQUEST_RECEIVED and not self.transport.is_closing():
            self.transport.close()


def deadline_protocol(head_timeout_seconds: float) -> type[DeadlineH11Protocol]:
    """The protocol class with this deadline (uvicorn builds one per connection)."""
    return type(
        "BrokerH11Protocol",
        (DeadlineH11Protocol,),
        {"head_timeout_seconds": head_timeout_seconds},
    )


def server_options(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Uvicorn options from the settings in ``env`` (``os.environ`` when None)."""
    settings = load_settings(dict(os.environ) if env is None else env)
    return {
        "http": deadline_protocol(settings.head_timeout_seconds),
        "h11_max_incomplete_event_size": MAX_REQUEST_HEAD_BYTES,
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.max_connections,
        # Its access line prints the query string (the callback's state and
        # code); the broker's own JSON access line replaces it.
        "access_log": False,
        # Only CTT_TRUSTED_PROXIES decides whether X-Forwarded-For names the client
        # (RequestGuard); uvicorn's own rewrite would trust any loopback peer, and it is
        # one more layer on every request.
        "proxy_headers": False,
        # Uvicorn answers or cancels what is still running shortly before
        # gunicorn's graceful timeout would kill the worker outright.
        "timeout_graceful_shutdown": max(1, settings.graceful_timeout_seconds - 2),
    }


class FreezeAfterStartup:
    """The app, with the garbage collector told to leave alone what startup built.

    Once the app has started (modules, the parsed spec, Connexion's validators and
    middleware stack, the engine), everything alive lives as long as the worker.
    ``gc.freeze()`` moves it out of the collector's sight: without it, every full
    collection walked it all again (82 ms in the flows benchmark, a pause that
    lands on whichever request is running). Only a server worker does this: a
    frozen object is never freed, which suits a process that builds one app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_then_freeze(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                gc.collect()
                gc.freeze()
            await send(message)

        await self.app(scope, receive, send_then_freeze)


class BrokerWorker(UvicornWorker):  # type: ignore[misc]
    """Uvicorn under gunicorn, with the limits above."""

    wsgi: Any  # the loaded app (gunicorn's name for it, ASGI or not)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # UvicornWorker.__init__ reads CONFIG_KWARGS; settings come from the environment.
        self.CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, **server_options()}
        super().__init__(*args, **kwargs)

    def load_wsgi(self) -> None:
        """Load the app (gunicorn's step), wrapped so that its startup ends in a freeze."""
        super().load_wsgi()
        self.wsgi = FreezeAfterStartup(self.wsgi)
