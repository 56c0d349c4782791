"""SQLite's writer gate: writers queue in Python, and every way a transaction ends opens it.

A gate left closed would stall every later write of the process for the busy
timeout and then fail it, so each way out of a transaction is tested.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, insert, select, text
from sqlalchemy.exc import IntegrityError

from broker.db import SqliteWriterGate, make_engine

GATE_TIMEOUT = 2.0


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    # A short gate timeout, so a gate wrongly left closed fails the test quickly.
    monkeypatch.setattr(SqliteWriterGate, "__init__", _short_init)
    engine = make_engine(f"sqlite:///{tmp_path / 'gate.sqlite3'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)"))
    return engine


def _short_init(self: SqliteWriterGate, timeout: float = GATE_TIMEOUT) -> None:
    self._lock = threading.Lock()
    self._holder = None
    self._timeout = timeout


_NOTES: dict[int, Table] = {}


def notes(engine: Engine) -> Table:
    # Reflected once per engine: reflecting inside a transaction would take a second connection.
    if id(engine) not in _NOTES:
        _NOTES[id(engine)] = Table("notes", MetaData(), autoload_with=engine)
    return _NOTES[id(engine)]


def write_quickly(engine: Engine, note_id: int) -> float:
    """Insert one row and return how long it took."""
    started = time.monotonic()
    with engine.begin() as connection:
        connection.execute(insert(notes(engine)).values(id=note_id, body="x"))
    return time.monotonic() - started


def test_a_connection_closed_without_commit_opens_the_gate(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(insert(notes(engine)).values(id=1, body="abandoned"))
        # closed here without commit: the pool's reset rolls it back
    assert write_quickly(engine, 2) < GATE_TIMEOUT / 2
    with engine.connect() as connection:
        assert connection.execute(select(notes(engine).c.id)).scalars().all() == [2]


def test_a_transaction_that_raises_opens_the_gate(engine: Engine) -> None:
    write_quickly(engine, 1)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert(notes(engine)).values(id=1, body="duplicate"))
    assert write_quickly(engine, 2) < GATE_TIMEOUT / 2


def test_an_explicit_rollback_opens_the_gate(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(insert(notes(engine)).values(id=1, body="undone"))
        connection.rollback()
        assert write_quickly(engine, 2) < GATE_TIMEOUT / 2
        connection.execute(insert(notes(engine)).values(id=3, body="kept"))
        connection.commit()
    assert write_quickly(engine, 4) < GATE_TIMEOUT / 2


def test_an_invalidated_connection_opens_the_gate(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(insert(notes(engine)).values(id=1, body="lost"))
        connection.invalidate()
    assert write_quickly(engine, 2) < GATE_TIMEOUT / 2


def test_reads_do_not_wait_for_a_writer(engine: Engine) -> None:
    with engine.connect() as writer:
        writer.execute(insert(notes(engine)).values(id=1, body="open"))
        started = time.monotonic()
        with engine.connect() as reader:
            assert reader.execute(select(notes(engine).c.id)).scalars().all() == []
        assert time.monotonic() - started < GATE_TIMEOUT / 2
        writer.commit()


def test_many_threads_writing_at_once_all_commit_in_turn(engine: Engine) -> None:
    """Before the gate, 32 writers met SQLite's sleeping busy handler; now they queue."""
    failures: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            for offset in range(20):
                with engine.begin() as connection:
                    connection.execute(select(notes(engine).c.id).limit(1)).all()
                    connection.execute(insert(notes(engine)).values(id=first + offset, body="x"))
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n * 100,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM notes")).scalar_one() == 640
