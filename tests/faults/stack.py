"""The whole stack on one private database, and the admin's browser that drives it.

Two ``ctt-broker serve`` instances share one public URL (the first one's address), one data
folder (state and result keys) and one database, as behind a load balancer; a browser picks the
instance per request. Two ``ctt-broker worker`` processes share the same database. The Microsoft
emulator runs in this process, so a test sets its faults directly (``stack.emulator``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from sqlalchemy import Engine, create_engine, text

from broker import cli
from broker.catalog import load_catalog
from broker.settings import load_settings
from emulator import Emulator, complete_browser_flow, create_emulator_app
from sandbox.emulator_setup import emulator_config_for
from sandbox.launch import free_port
from tests import http_clients
from tests.faults.postgres import PrivatePostgres, private_postgres
from tests.faults.servers import (
    START_SECONDS,
    Child,
    Receiver,
    Restartable,
    spawn,
    wait_healthy,
    wait_until,
)

CONTOSO_ADMIN = "admin@contoso.onmicrosoft.com"
# The token endpoint may be made slow by 3 s for the reproduction of issue 9.1; every other
# Microsoft call must still fit, and a hung one must end well inside a test's own guard.
MICROSOFT_TIMEOUT_SECONDS = 4
BIN = Path(sys.executable).parent


@dataclass
class Provider:
    """A provider made for one test: its key, a registered enterprise, its webhook path."""

    provider_id: str
    api_key: str
    hook_path: str
    callback_url: str
    enterprise_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class Stack:
    """Everything the fault tests drive."""

    postgres: PrivatePostgres
    emulator: Emulator
    emulator_server: Restartable
    receiver: Receiver
    instances: tuple[str, str]
    workers: tuple[Child, Child]
    servers: tuple[Child, Child]
    env: dict[str, str]
    engine: Engine
    _count: int = 0

    @property
    def public_url(self) -> str:
        """The one public base URL both instances share (the first instance's address)."""
        return self.instances[0]

    def cli(self, *argv: str) -> str:
        """Run ``ctt-broker ARGV`` against the stack's database; returns what it printed."""
        out, err = StringIO(), StringIO()
        code = cli.main(list(argv), env=self.env, out=out, err=err)
        if code != 0:
            raise RuntimeError(f"ctt-broker {argv[0]} failed ({code}): {err.getvalue()}")
        return out.getvalue()

    def api(self, instance: int = 0) -> httpx.Client:
        """An API client for one instance."""
        return http_clients.client(base_url=self.instances[instance], timeout=30)

    def new_provider(self, tag: str) -> Provider:
        """A development provider with a callback and a webhook on the receiver."""
        self._count += 1
        name = f"{tag}-{self._count}-{os.urandom(3).hex()}"
        hook_path = f"/hooks/{name}"
        callback = self.receiver.url(f"/callback/{name}")
        created = json.loads(
            self.cli("provider", "create", name, "--callback", callback, "--development", "--json")
        )
        self.cli("provider", "set-webhook", created["providerId"], self.receiver.url(hook_path))
        return Provider(created["providerId"], created["apiKey"], hook_path, callback)

    def registered_provider(self, tag: str) -> Provider:
        """A provider whose enterprise completed REGISTRATION through the emulator."""
        provider = self.new_provider(tag)
        with self.api() as api:
            created = api.post(
                "/enterprises",
                json={"name": f"Contoso {tag}", "externalId": tag},
                headers=provider.headers,
            )
            assert created.status_code == 201, created.text
        provider.enterprise_id = created.json()["enterpriseId"]
        browser = Browser(self)
        _item, url = self.link(provider, "REGISTRATION")
        answer = browser.round_trip(url)
        assert browser_outcome(answer, provider) == "completed", answer.text
        return provider

    def link(
        self, provider: Provider, action_type: str = "LOGIN_ENTERPRISE_ADMIN", instance: int = 0
    ) -> tuple[str, str]:
        """``getActionItemUrl``; returns the action item id and the link."""
        with self.api(instance) as api:
            answer = api.post(
                "/enterprise/getActionItemUrl",
                json={
                    "actionType": action_type,
                    "enterpriseId": provider.enterprise_id,
                    "callbackUrl": provider.callback_url,
                    "state": "faults",
                },
                headers=provider.headers,
            )
        assert answer.status_code == 201, answer.text
        body = answer.json()
        return body["actionItemId"], body["url"]

    def reset_faults(self) -> None:
        """Every part up and healthy, the emulator without faults (after any test)."""
        if not self.postgres.running:
            self.postgres.start()
        self.emulator_server.start()
        self.receiver.start()
        self.emulator.set_token_delay(0)
        self.emulator.fail_next_token_requests(0)


def stack_env(
    postgres: PrivatePostgres, data: Path, public_url: str, emulator_url: str
) -> dict[str, str]:
    """The broker's settings for every process of the stack."""
    return {
        # Test-only CTT_ variables (CTT_TEST_...) would be refused as unknown settings.
        **{k: v for k, v in os.environ.items() if not k.startswith("CTT_")},
        "CTT_MODE": "sandbox",
        "CTT_DATABASE_URL": postgres.url,
        "CTT_DATA_DIR": str(data),
        "CTT_PUBLIC_BASE_URL": public_url,
        "CTT_LOGIN_BROWSER_URL": emulator_url,
        "CTT_LOGIN_TRANSPORT_URL": emulator_url,
        "CTT_WORKERS": "1",
        "CTT_LOG_LEVEL": "WARNING",
        "CTT_MICROSOFT_TIMEOUT_SECONDS": str(MICROSOFT_TIMEOUT_SECONDS),
        "CTT_CONSENT_CONFIRM_ATTEMPTS": "1",
        "CTT_CONSENT_CONFIRM_INTERVAL_SECONDS": "0",
        # Every test client is 127.0.0.1: the abuse limits stay on, sized for the load here.
        "CTT_RATE_LIMIT_ADMIN": "100000/minute",
        "CTT_RATE_LIMIT_LINK": "100000/minute",
        "CTT_RATE_LIMIT_AUTH_FAILURES": "100000/minute",
        "CTT_RATE_LIMIT_API": "100000/minute",
    }


@contextmanager
def running_stack(workdir: Path) -> Iterator[Stack]:
    """Start the whole stack; stop everything on the way out, whatever happened."""
    cli_path = shutil.which("ctt-broker", path=str(BIN))
    if cli_path is None:
        raise RuntimeError("the ctt-broker console script is not installed next to this Python")
    data, logs = workdir / "data", workdir / "logs"
    data.mkdir()
    logs.mkdir()
    ports = (free_port(), free_port())
    instances = (f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    with ExitStack() as cleanup:
        postgres = cleanup.enter_context(private_postgres())
        env = stack_env(postgres, data, instances[0], emulator_url)
        settings = load_settings(env)
        emulator = Emulator(
            emulator_config_for(
                load_catalog(),
                settings.redirect_uri,
                issuer_base_url=settings.login_host,
                browser_base_url=emulator_url,
            )
        )
        emulator_server = Restartable("emulator", create_emulator_app(emulator), emulator_port)
        emulator_server.start()
        cleanup.callback(emulator_server.stop)
        receiver = Receiver()
        receiver.start()
        cleanup.callback(receiver.stop)
        # Migrate once, before two servers would race to do it.
        if cli.main(["db", "upgrade"], env=env, out=StringIO(), err=StringIO()) != 0:
            raise RuntimeError("ctt-broker db upgrade failed on the private PostgreSQL")
        servers = []
        for number, port in enumerate(ports):
            server = spawn(
                f"serve-{number}",
                [cli_path, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                env,
                logs,
            )
            cleanup.callback(server.stop)
            servers.append(server)
        for server, base in zip(servers, instances, strict=True):
            wait_healthy(server, base)
        engine = create_engine(postgres.url, pool_pre_ping=True, pool_size=2)
        cleanup.callback(engine.dispose)
        before = _client_connections(engine)
        workers = []
        for number in range(2):
            worker = spawn(f"worker-{number}", [cli_path, "worker", "--interval", "0.5"], env, logs)
            cleanup.callback(worker.stop)
            workers.append(worker)
        # A worker checks the schema once at start and exits if the database is down then:
        # the tests may stop PostgreSQL only once both workers are past that point.
        if not wait_until(lambda: _client_connections(engine) >= before + 2, START_SECONDS):
            raise RuntimeError("the workers did not connect:\n" + workers[0].output())
        yield Stack(
            postgres=postgres,
            emulator=emulator,
            emulator_server=emulator_server,
            receiver=receiver,
            instances=instances,
            workers=(workers[0], workers[1]),
            servers=(servers[0], servers[1]),
            env=env,
            engine=engine,
        )


def _client_connections(engine: Engine) -> int:
    """Client connections the server holds now (ours included)."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            ).scalar_one()
        )


@dataclass(frozen=True)
class Answer:
    """One answer of the broker to the browser: where it came from and its status."""

    instance: str
    path: str
    status: int


@dataclass
class Browser:
    """The admin's browser: one cookie jar (per host, not port), redirects followed by hand.

    Every answer from a broker instance is recorded, so a test can say that no 500 reached it.
    """

    stack: Stack
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = http_clients.client(timeout=30, follow_redirects=False)
        self.client.event_hooks = {"request": [], "response": [self._record]}

    def _record(self, response: httpx.Response) -> None:
        url = response.request.url
        base = f"{url.scheme}://{url.host}:{url.port}"
        if base in self.stack.instances:
            self.answers.append(Answer(base, url.path, response.status_code))

    def on(self, url: str, instance: int | None) -> str:
        """``url`` sent to one instance (the load balancer's choice), or as it is."""
        if instance is None:
            return url
        target = urlsplit(self.stack.instances[instance])
        return urlunsplit(urlsplit(url)._replace(netloc=target.netloc))

    def get(self, url: str, instance: int | None = None) -> httpx.Response:
        """A GET as the browser sends it, with its cookies."""
        return self.client.get(self.on(url, instance))

    def click(self, link: str, instance: int | None = None) -> str:
        """Open the link; returns Microsoft's address the broker sent the browser to."""
        answer = self.get(link, instance)
        assert answer.status_code == 302, f"{answer.status_code}: {answer.text[:300]}"
        return answer.headers["location"]

    def at_microsoft(self, location: str, username: str = CONTOSO_ADMIN) -> str:
        """Sign in at the emulator; returns the callback URL Microsoft sends the browser to."""
        result = complete_browser_flow(self.client, location, username=username)
        return f"{result.redirect_uri}?{urlencode(result.params)}"

    def round_trip(self, link: str, launch_on: int = 0, return_on: int = 0) -> httpx.Response:
        """Click, sign in, come back; returns the broker's answer to the callback."""
        callback = self.at_microsoft(self.click(link, launch_on))
        return self.get(callback, return_on)

    def server_errors(self) -> list[Answer]:
        """Every 500 the broker showed this browser (never allowed)."""
        return [answer for answer in self.answers if answer.status == 500]

    def cookies_header(self) -> str:
        """The cookies as a header, for a second connection racing the first."""
        return "; ".join(f"{c.name}={c.value}" for c in self.client.cookies.jar)


def browser_outcome(answer: httpx.Response, provider: Provider) -> str | None:
    """The ``status`` the broker sent the browser back to the provider with, if it did."""
    if answer.status_code != 303:
        return None
    location = answer.headers.get("location", "")
    if not location.startswith(provider.callback_url):
        return None
    return dict(parse_qsl(urlsplit(location).query)).get("status")


def table(title: str, rows: Mapping[Any, object]) -> str:
    """A small two-column table for the test's printed report."""
    width = max((len(str(key)) for key in rows), default=0)
    lines = [title] + [f"  {key!s:<{width}}  {value}" for key, value in rows.items()]
    return "\n".join(lines)
