"""Bulkheads: admin requests stuck on Microsoft never hold the provider API's threads."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlencode, urlsplit

import pytest
import uvicorn

from broker.ratelimits import RateLimits
from emulator.seed import CONTOSO_TENANT_ID
from handlers.app import create_app
from tests import http_clients
from tests.flow.conftest import CONTOSO_ADMIN, World

pytestmark = pytest.mark.slow

IN_FLIGHT = 45
TOKEN_DELAY = 4.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(world: World) -> Iterator[str]:
    """The world's broker on a real event loop, as uvicorn serves it in production."""
    settings = replace(world.runtime.settings, microsoft_concurrency=IN_FLIGHT)
    runtime = replace(world.runtime, settings=settings)
    generous = {name: "10000/minute" for name in ("admin", "link", "auth_failure", "api")}
    app = create_app(settings, runtime, rate_limits=RateLimits("memory://", generous, "t"))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_provider_api_answers_while_microsofts_token_endpoint_hangs(
    world: World, served: str
) -> None:
    """45 admins return from Microsoft while its token endpoint hangs 4 s; the API still answers.

    Before, the callbacks took every thread of the shared pool and an
    unrelated API request waited for Microsoft's timeout.
    """
    world.register(CONTOSO_TENANT_ID)
    callbacks: list[tuple[str, str]] = []
    with http_clients.client(base_url=served, timeout=30) as http:
        for _ in range(IN_FLIGHT):
            link = world.link("LOGIN_ENTERPRISE_ADMIN")
            launched = http.get(urlsplit(link["url"]).path)
            assert launched.status_code == 302, launched.text
            cookie = launched.headers["set-cookie"].split(";", 1)[0]
            params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
            callbacks.append(("/oauth/callback?" + urlencode(params), cookie))
    assert http_clients.get(f"{served}/enterprises", headers=world.headers).status_code == 200
    world.emulator.set_token_delay(TOKEN_DELAY)
    statuses: list[int] = []

    def admin_returns(path: str, cookie: str) -> None:
        with http_clients.client(base_url=served, timeout=30) as browser:
            statuses.append(browser.get(path, headers={"Cookie": cookie}).status_code)

    admins = [threading.Thread(target=admin_returns, args=pair) for pair in callbacks]
    for admin in admins:
        admin.start()
    time.sleep(0.5)  # every callback is now waiting on Microsoft
    started = time.monotonic()
    answer = http_clients.get(f"{served}/enterprises", headers=world.headers, timeout=30)
    elapsed = time.monotonic() - started
    for admin in admins:
        admin.join(timeout=60)
    assert answer.status_code == 200
    assert elapsed < TOKEN_DELAY / 2, elapsed
    assert statuses == [303] * IN_FLIGHT
