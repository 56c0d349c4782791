"""Fixtures of the fault suite: one stack for the session, every part healthy before each test.

The stack is a private PostgreSQL cluster (started and crashed by the tests, never the shared
server on 5432), two ``ctt-broker serve`` instances and two ``ctt-broker worker`` processes on
it, the Microsoft emulator and a webhook receiver. See ``tests/faults/support.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.support import Stack, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("faults")) as started:
        yield started


@pytest.fixture(autouse=True)
def healthy(stack: Stack) -> Iterator[None]:
    """Each test starts with the database, Microsoft and the receiver up and without faults."""
    stack.reset_faults()
    yield
    stack.reset_faults()
    for child in (*stack.servers, *stack.workers):
        assert child.process.poll() is None, f"{child.name} died:\n{child.output()}"
