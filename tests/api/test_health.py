"""Liveness and readiness probes: live touches nothing; ready names what is missing."""

from __future__ import annotations

import secrets
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.credentials import load_credentials
from broker.db import make_engine
from broker.runtime import Runtime
from tests.shared_app import serving_app

PROBLEM = "application/problem+json"


def client_for(runtime: Runtime) -> Any:
    return serving_app(runtime).test_client(raise_server_exceptions=False)


def with_keys(runtime: Runtime) -> Runtime:
    keys = load_credentials(runtime.settings, runtime.catalog, secrets.token_bytes)
    return replace(runtime, credentials=keys)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ready_when_database_schema_and_keys_are_there(runtime: Runtime) -> None:
    answer = client_for(with_keys(runtime)).get("/health/ready")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "database": "ok", "schema": "ok", "keys": "ok"}


def test_live_answers_without_the_database(runtime: Runtime) -> None:
    """A database outage must not make the orchestrator kill every instance in a loop."""
    away = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/none")
    broken = replace(with_keys(runtime), engine=away)
    client = client_for(broken)
    assert client.get("/health/live").json() == {"status": "ok"}
    answer = client.get("/health/ready")
    assert (answer.status_code, answer.headers["content-type"]) == (503, PROBLEM)
    assert "does not answer" in answer.json()["detail"]


def test_not_ready_while_the_schema_is_behind(runtime: Runtime, tmp_path: Path) -> None:
    """An instance started before `db upgrade` must not get traffic it would answer with 500s."""
    stale = replace(with_keys(runtime), engine=make_engine(f"sqlite:///{tmp_path / 'new.db'}"))
    answer = client_for(stale).get("/health/ready")
    assert answer.status_code == 503
    assert "db upgrade" in answer.json()["detail"]


@pytest.mark.parametrize("missing", ["all keys", "one app"])
def test_not_ready_without_keys(runtime: Runtime, missing: str) -> None:
    keyed = with_keys(runtime)
    if missing == "all keys":
        keyed = replace(keyed, credentials=None)
    else:
        keys = keyed.credentials
        app = sorted(keys.apps)[0]
        apps = {name: value for name, value in keys.apps.items() if name != app}
        keyed = replace(keyed, credentials=replace(keys, apps=apps))
    answer = client_for(keyed).get("/health/ready")
    assert answer.status_code == 503
    assert ("not loaded" if missing == "all keys" else "no credentials") in answer.json()["detail"]
