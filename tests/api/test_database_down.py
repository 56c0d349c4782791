"""The database away is a 503 with Retry-After, never a 500, and the broker recovers alone.

The shared PostgreSQL server is never stopped: outages are made with a closed
port, a TCP relay the test cuts and restores, and pg_terminate_backend on the
test's own connections.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from broker.catalog import load_catalog
from broker.db import make_engine
from broker.migrate import upgrade_database
from broker.runtime import Runtime
from broker.settings import load_settings
from handlers.app import create_app
from tests.conftest import POSTGRES_SERVER, ProviderAccount, make_provider

PROBLEM = "application/problem+json"
KEY = "Bearer ctt_sk_" + "A" * 43


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Relay:
    """A TCP relay to PostgreSQL that the test can cut (refusing) and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.listener: socket.socket | None = None
        self.open: list[socket.socket] = []
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        if self.listener is not None:
            # shutdown() stops listening and wakes the accepting thread; close() alone does not.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        for sock in self.open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            # shutdown() first: it sends the FIN and wakes the other direction's recv(),
            # which close() alone does not while that thread still holds the socket.
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


def app_on(url: str, tmp_path: Path) -> Any:
    settings = load_settings(
        {
            "CTT_DATABASE_URL": url,
            "CTT_DATA_DIR": str(tmp_path),
            "CTT_PUBLIC_BASE_URL": "https://broker.test",
        }
    )
    runtime = Runtime(settings=settings, engine=make_engine(url), catalog=load_catalog())
    client = create_app(settings, runtime).test_client(raise_server_exceptions=False)
    client.app_engine = runtime.engine
    return client


def assert_unavailable(response: Any, html: bool = False) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-content-type-options"] == "nosniff"
    if html:
        assert response.headers["content-type"].startswith("text/html")
        assert "This service is briefly unavailable." in response.text
        assert "Wait a minute, then try again." in response.text
    else:
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "SERVICE_UNAVAILABLE"


def test_database_refusing_connections_is_503_on_api_and_admin_pages(tmp_path: Path) -> None:
    """PostgreSQL is down: the provider gets 503 SERVICE_UNAVAILABLE, the admin a 'try again'."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
    client = app_on(url, tmp_path)
    body = {
        "actionType": "REGISTRATION",
        "enterpriseId": "ent_01JCX3Q2B6V7W8X9Y0Z1A2B3C4",
        "callbackUrl": "https://portal.example.com/cb",
    }
    assert_unavailable(
        client.post("/enterprise/getActionItemUrl", json=body, headers={"Authorization": KEY})
    )
    assert_unavailable(client.get("/enterprises", headers={"Authorization": KEY}))
    assert_unavailable(client.get("/actions/" + "A" * 43), html=True)
    assert_unavailable(client.get("/health"))


@pytest.fixture
def relayed(tmp_path: Path) -> Iterator[tuple[Relay, Any, ProviderAccount]]:
    """A broker on a schema of its own, reaching PostgreSQL through a relay."""
    server = make_url(POSTGRES_SERVER)
    relay = Relay((server.host or "127.0.0.1", server.port or 5432))
    schema = f"ctt_outage_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    direct = f"{POSTGRES_SERVER}?options=-csearch_path%3D{schema}"
    engine = make_engine(direct)
    upgrade_database(engine)
    settings = load_settings({"CTT_DATABASE_URL": direct, "CTT_DATA_DIR": str(tmp_path)})
    provider = make_provider(
        Runtime(settings=settings, engine=engine, catalog=load_catalog()), "Outage Telecom"
    )
    relayed_url = direct.replace(
        server.render_as_string(hide_password=False).split("@", 1)[1].split("/", 1)[0],
        f"127.0.0.1:{relay.port}",
    )
    client = app_on(relayed_url, tmp_path)
    yield relay, client, provider
    relay.cut()
    client.app_engine.dispose()
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_database_outage_mid_traffic_is_503_then_recovers_without_restart(
    relayed: tuple[Relay, Any, ProviderAccount],
) -> None:
    """The database goes away under a running broker and comes back: 200, 503s, then 200."""
    relay, client, provider = relayed
    assert client.get("/enterprises", headers=provider.headers).status_code == 200
    relay.cut()
    assert_unavailable(client.get("/enterprises", headers=provider.headers))
    assert_unavailable(client.get("/actions/" + "A" * 43), html=True)
    relay.restore()
    assert client.get("/enterprises", headers=provider.headers).status_code == 200


def test_terminated_backend_connections_are_replaced_without_an_error(
    relayed: tuple[Relay, Any, ProviderAccount],
) -> None:
    """A failover (or an operator) kills the broker's own database sessions: no 500 follows."""
    _, client, provider = relayed
    assert client.get("/enterprises", headers=provider.headers).status_code == 200
    engine = client.app_engine
    connections = [engine.connect() for _ in range(3)]
    pids = [c.execute(text("SELECT pg_backend_pid()")).scalar_one() for c in connections]
    for connection in connections:
        connection.close()  # back to the pool, soon dead
    admin = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for pid in pids:  # only this test's sessions: never anyone else's
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()
    for _ in range(4):
        assert client.get("/enterprises", headers=provider.headers).status_code == 200
