"""PostgreSQL's pool: a connection the server ended is replaced at checkout, a quiet one reused.

The pool pre-pings a connection only when its socket has something to read (the
server's goodbye, or its closing): one round trip less on every checkout, and a
terminated backend still never reaches a statement.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from broker.db import make_engine
from tests.conftest import BACKENDS, POSTGRES_SERVER

pytestmark = pytest.mark.skipif("postgresql" not in BACKENDS, reason="CTT_TEST_SKIP_POSTGRES=1")

SESSION = text("SELECT pg_backend_pid()")


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The driver connections the real (round-trip) ping ran on."""
    seen: list[Any] = []
    real = PGDialect_psycopg.do_ping

    def counted(self: PGDialect_psycopg, dbapi_connection: Any) -> bool:
        seen.append(dbapi_connection)
        return bool(real(self, dbapi_connection))

    monkeypatch.setattr(PGDialect_psycopg, "do_ping", counted)
    return seen


@pytest.fixture
def engine(pings: list[Any]) -> Iterator[Engine]:
    engine = make_engine(POSTGRES_SERVER, pool_size=2)
    try:
        yield engine
    finally:
        engine.dispose()


def backend_of(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(SESSION).scalar_one())


def terminate(pid: int) -> None:
    admin = create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
    try:
        # Waits (up to 5 s) until the session has ended: only this test's own session.
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    finally:
        admin.dispose()


def test_a_quiet_pooled_connection_is_reused_without_a_round_trip(
    engine: Engine, pings: list[Any]
) -> None:
    first = backend_of(engine)
    for _ in range(5):
        assert backend_of(engine) == first
    assert pings == []


def test_a_terminated_backend_is_replaced_at_checkout_not_met_by_a_statement(
    engine: Engine, pings: list[Any]
) -> None:
    first = backend_of(engine)
    terminate(first)
    replaced = backend_of(engine)  # raises if the dead connection reached the statement
    assert replaced != first
    assert len(pings) == 1  # the goodbye made the socket readable: the real ping ran, failed
    assert backend_of(engine) == replaced


def test_a_socket_with_anything_to_read_gets_the_real_ping_and_stays_when_it_answers(
    engine: Engine, pings: list[Any]
) -> None:
    with engine.connect() as other:  # held: the pool's only idle connection is the listener
        with engine.connect() as listener:
            first = int(listener.execute(SESSION).scalar_one())
            listener.execute(text("LISTEN ctt_pool_test"))
            listener.commit()
            raw = listener.connection.dbapi_connection
            assert raw is not None
        other.execute(text("NOTIFY ctt_pool_test"))
        other.commit()
        # The notice travels on its own: wait until it is there to read.
        assert select.select([raw.fileno()], [], [], 5.0)[0]
        with engine.connect() as again:  # a notice waits on its socket: not a goodbye
            assert int(again.execute(SESSION).scalar_one()) == first
    assert len(pings) == 1
