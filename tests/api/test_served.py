"""The real thing: ``ctt-broker serve`` (gunicorn + uvicorn worker) over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import http_clients

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    data = tmp_path_factory.mktemp("served")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_DATA_DIR": str(data),
        "CTT_PUBLIC_BASE_URL": base,
        "CTT_WORKERS": "2",
    }
    cli = shutil.which("ctt-broker", path=str(BIN))
    assert cli, "the ctt-broker console script is installed with the package"
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
                raise AssertionError(
                    server.stderr.read().decode() if server.stderr else "no output"
                )
            time.sleep(0.2)
        created = subprocess.run(  # noqa: S603
            [
                cli,
                "provider",
                "create",
                "Served",
                "--callback",
                "https://portal.example.com/cb",
                "--json",
            ],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        key = json.loads(created.stdout)["apiKey"]
        yield base, {"Authorization": f"Bearer {key}"}
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_served_api_creates_enterprise_and_link(served: tuple[str, dict[str, str]]) -> None:
    base, headers = served
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        enterprise = client.post("/enterprises", json={"name": "Contoso", "externalId": "c-1"})
        assert enterprise.status_code == 201
        link = client.post(
            "/enterprise/getActionItemUrl",
            json={
                "actionType": "REGISTRATION",
                "enterpriseId": enterprise.json()["enterpriseId"],
                "callbackUrl": "https://portal.example.com/cb",
            },
        )
        assert link.status_code == 201
        assert link.json()["url"].startswith(f"{base}/actions/")
        item_id = link.json()["actionItemId"]
        assert client.get(f"/actionItems/{item_id}").json()["status"] == "created"
        assert client.post(f"/actionItems/{item_id}/revoke").json()["status"] == "revoked"


def test_served_api_answers_problems_and_docs(served: tuple[str, dict[str, str]]) -> None:
    base, headers = served
    with httpx.Client(base_url=base, timeout=10) as client:
        unauthenticated = client.get("/enterprises")
        assert unauthenticated.status_code == 401
        assert unauthenticated.headers["content-type"] == "application/problem+json"
        bad = client.post(
            "/enterprises",
            content=b'{"name": "\xff"}',
            headers={**headers, "Content-Type": "application/json"},
        )
        assert bad.json()["code"] == "INVALID_REQUEST_BODY"
        assert client.get("/openapi.json").json()["info"]["title"].startswith("ctt-broker")
        assert client.get("/ui/").status_code == 200
