"""Fixtures of the fault suite: one stack for the session, every part healthy before each test.

The stack is a private PostgreSQL cluster (started and crashed by the tests, never the shared
server on 5432), two ``ctt-broker serve`` instances and two ``ctt-broker worker`` processes on
it, the Microsoft emulator and a webhook receiver. See ``stack.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faults.stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.environ.get("CTT_TEST_SKIP_POSTGRES") == "1":
        # The same deliberate opt-out as the storage tests: no PostgreSQL on this machine.
        pytest.skip("CTT_TEST_SKIP_POSTGRES=1: the fault suite needs PostgreSQL's server binaries")
    with running_stack(tmp_path_factory.mktemp("faults")) as started:
        yield started


@pytest.fixture(autouse=True)
def healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each stack test starts with the database, Microsoft and the receiver up, without faults,
    and leaves every process of the stack alive."""
    if "stack" not in request.fixturenames:
        yield
        return
    stack: Stack = request.getfixturevalue("stack")
    stack.reset_faults()
    yield
    stack.reset_faults()
    for child in (*stack.servers, *stack.workers):
        assert child.process.poll() is None, f"{child.name} died:\n{child.output()}"
