"""The fault harness: real processes on loopback, and the parts a test can break.

* :class:`PrivatePostgres`: a throw-away PostgreSQL cluster of our own (never the shared one on
  5432) that a test can crash (``pg_ctl stop -m immediate``) and start again on the same port and
  data directory.
* Two ``ctt-broker serve`` instances and two ``ctt-broker worker`` processes on that database,
  sharing one data folder (state and result keys) and one public URL, as behind a load balancer.
* The Microsoft emulator in this process (so a test sets its faults directly) behind a
  :class:`Restartable` server that can refuse connections and come back on the same port.
* :class:`Receiver`, the provider's webhook endpoint, which can be down and back.
* :class:`Browser`, the admin's browser: one cookie jar, redirects by hand, every broker answer
  recorded.
* :func:`invariant_violations`: the rule every fault test ends with, read from the database.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
from sandbox.__main__ import ThreadServer
from sandbox.emulator_setup import emulator_config_for
from sandbox.launch import free_port

CONTOSO_ADMIN = "admin@contoso.onmicrosoft.com"
FINAL = ("completed", "failed", "pending")
START_SECONDS = 40.0
# The token endpoint may be made slow by 3 s for the reproduction of issue 9.1; every other
# Microsoft call must still fit, and a hung one must end well inside a test's own guard.
MICROSOFT_TIMEOUT_SECONDS = 4
BIN = Path(sys.executable).parent


def wait_until(condition: Any, seconds: float, interval: float = 0.1) -> bool:
    """Poll ``condition()`` until it is true or ``seconds`` pass; returns its last answer."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# --- PostgreSQL -----------------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, on a free port, trust auth, loopback only.

    As root, ``initdb`` and ``postgres`` refuse to run, so the server runs as the ``postgres``
    user in a folder it owns.
    """

    def __init__(self) -> None:
        found = sorted(
            glob.glob("/usr/lib/postgresql/*/bin"),
            key=lambda path: int(Path(path).parent.name.split(".")[0]),
        )
        if not found:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
        self.bin = Path(found[-1])
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ctt-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of its ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [*self._run_as, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def create(self) -> None:
        """``initdb`` the cluster (no fsync: a crash here is a process crash, not a power cut)."""
        self._pg(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start (or restart after a crash: recovery runs first) and wait until it accepts."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=100"
        )
        started = self._pg(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
            check=False,
        )
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{self.server_log()}")

    def crash(self) -> None:
        """Stop at once (``-m immediate``): connections drop, nothing is shut down cleanly."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    @property
    def running(self) -> bool:
        """Whether the server process is up."""
        return self._pg("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def server_log(self) -> str:
        """The server's own log, for failure messages."""
        with suppress(OSError):
            return self.log.read_text("utf-8", "replace")[-4000:]
        return ""

    def destroy(self) -> None:
        """Stop if running and delete the folder; safe to call after any failure."""
        with suppress(Exception):
            if self.data.exists() and self.running:
                self.crash()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A created and started cluster for the block, always destroyed afterwards."""
    cluster = PrivatePostgres()
    try:
        cluster.create()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


# --- Processes and servers ------------------------------------------------------------------


@dataclass
class Child:
    """A child process whose output goes to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """The last lines it printed, for failure messages."""
        with suppress(OSError):
            return self.log.read_text("utf-8", "replace")[-4000:]
        return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def spawn(name: str, argv: list[str], env: Mapping[str, str], logs: Path) -> Child:
    """Start ``argv`` with ``env``; stdout and stderr go to ``logs/name.log``."""
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    return Child(name, process, log)


def wait_healthy(child: Child, base_url: str) -> None:
    """Return once ``/health`` answers 200; fail with the child's output otherwise."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        with suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        if child.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not start:\n{child.output()}")
        time.sleep(0.2)


class Restartable:
    """An ASGI app on a fixed loopback port that can go away (connection refused) and return."""

    def __init__(self, name: str, app: Any, port: int) -> None:
        self.name = name
        self.app = app
        self.port = port
        self._server: ThreadServer | None = None

    @property
    def up(self) -> bool:
        """Whether it listens now."""
        return self._server is not None

    def start(self) -> None:
        """Listen again on the same port."""
        if self._server is None:
            server = ThreadServer(self.name, self.app, self.port)
            server.start()
            self._server = server

    def stop(self) -> None:
        """Stop listening: new connections are refused."""
        if self._server is not None:
            self._server.stop()
            self._server = None


@dataclass(frozen=True)
class Delivery:
    """One webhook request the receiver answered."""

    path: str
    webhook_id: str
    event_type: str
    at: float


class Receiver:
    """The providers' webhook endpoint: answers 204 and remembers; can be down, then back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        """``http://127.0.0.1:{port}{path}``."""
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[Delivery]:
        """What arrived at ``path`` so far."""
        with self._lock:
            return [d for d in self.deliveries if d.path == path]

    def start(self) -> None:
        """Listen (again) on the same port."""
        if self._server is not None:
            return
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    event_type = str(json.loads(body).get("type", ""))
                except (ValueError, AttributeError):
                    event_type = ""
                with receiver._lock:
                    receiver.deliveries.append(
                        Delivery(
                            self.path,
                            self.headers.get("webhook-id", ""),
                            event_type,
                            time.monotonic(),
                        )
                    )
                self.send_response(204)
                self.end_headers()

            def do_GET(self) -> None:  # the provider's callback page
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"back at the provider")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: deliveries are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- The stack ------------------------------------------------------------------------------


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
        return httpx.Client(base_url=self.instances[instance], timeout=30)

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


def stack_env(postgres: PrivatePostgres, data: Path, public_url: str, emulator_url: str) -> dict[str, str]:
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


# --- The admin's browser --------------------------------------------------------------------


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
        self.client = httpx.Client(timeout=30, follow_redirects=False)
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


# --- The invariant --------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemRecord:
    """What the database holds about one action item."""

    item_id: str
    action_type: str
    status: str
    error_code: str | None
    results: int
    events: tuple[str, ...]
    flows: int
    spent_flows: int


def item_records(engine: Engine, provider_id: str) -> dict[str, ItemRecord]:
    """Every action item of ``provider_id`` with its results, events and flows."""
    with engine.connect() as connection:
        items = connection.execute(
            text(
                "SELECT id, action_type, status, error_code FROM action_items "
                "WHERE provider_id = :provider ORDER BY id"
            ),
            {"provider": provider_id},
        ).all()
        results = dict(
            connection.execute(
                text(
                    "SELECT action_item_id, count(*) FROM results "
                    "WHERE provider_id = :provider GROUP BY action_item_id"
                ),
                {"provider": provider_id},
            ).all()
        )
        events: dict[str, list[str]] = {}
        for item_id, event_type in connection.execute(
            text(
                "SELECT action_item_id, type FROM events "
                "WHERE provider_id = :provider AND action_item_id IS NOT NULL ORDER BY id"
            ),
            {"provider": provider_id},
        ).all():
            events.setdefault(item_id, []).append(event_type)
        flows = {
            item_id: (total, spent)
            for item_id, total, spent in connection.execute(
                text(
                    "SELECT f.action_item_id, count(*), count(f.consumed_at) FROM flows f "
                    "JOIN action_items a ON a.id = f.action_item_id "
                    "WHERE a.provider_id = :provider GROUP BY f.action_item_id"
                ),
                {"provider": provider_id},
            ).all()
        }
    return {
        item_id: ItemRecord(
            item_id=item_id,
            action_type=action_type,
            status=status,
            error_code=error_code,
            results=int(results.get(item_id, 0)),
            events=tuple(events.get(item_id, ())),
            flows=int(flows.get(item_id, (0, 0))[0]),
            spent_flows=int(flows.get(item_id, (0, 0))[1]),
        )
        for item_id, action_type, status, error_code in items
    }


def item_violations(record: ItemRecord) -> list[str]:
    """How one action item breaks "one outcome and one event set", if it does."""
    problems: list[str] = []
    name = f"{record.item_id} ({record.action_type}, {record.status})"
    final = record.status in FINAL
    if record.spent_flows and not final:
        problems.append(f"{name}: a spent flow but no outcome")
    if final and record.results != 1:
        problems.append(f"{name}: {record.results} results, expected exactly 1")
    if not final and record.results:
        problems.append(f"{name}: {record.results} results without an outcome")
    if record.status == "failed" and not record.error_code:
        problems.append(f"{name}: failed without an error code")
    counts = Counter(record.events)
    doubled = sorted(event for event, count in counts.items() if count > 1)
    if doubled:
        problems.append(f"{name}: events sent more than once: {doubled}")
    item_events = tuple(event for event in record.events if event.startswith("actionItem."))
    if final:
        # One outcome event; a consent confirmed in the background was announced pending first.
        allowed = {(f"actionItem.{record.status}",)}
        if record.status != "pending":
            allowed.add(("actionItem.pending", f"actionItem.{record.status}"))
        if item_events not in allowed:
            problems.append(f"{name}: outcome events {list(item_events)}")
    elif record.events:
        problems.append(f"{name}: events {list(record.events)} without an outcome")
    if record.action_type == "REGISTRATION" and record.status == "completed":
        if counts["enterprise.registered"] != 1:
            problems.append(f"{name}: enterprise.registered sent {counts['enterprise.registered']}x")
    return problems


def invariant_violations(
    stack: Stack,
    provider: Provider,
    *,
    settled: Iterable[str] = (),
    browsers: Iterable[Browser] = (),
) -> list[str]:
    """Every action item that reached Microsoft ends with exactly one outcome and one event set,
    and no 500 reached a browser.

    ``settled`` names items whose round trip is over (a callback was sent): each must have its
    outcome. Items never sent back may stay ``opened``, but only without a spent flow.
    """
    records = item_records(stack.engine, provider.provider_id)
    problems = [problem for record in records.values() for problem in item_violations(record)]
    for item_id in settled:
        record = records.get(item_id)
        if record is None:
            problems.append(f"{item_id}: not in the database")
        elif record.status not in FINAL:
            problems.append(f"{item_id}: round trip over but still {record.status}")
    for browser in browsers:
        problems.extend(f"a browser got 500 from {a.instance}{a.path}" for a in browser.server_errors())
    return problems


def settle(stack: Stack, provider: Provider, seconds: float, **checks: Any) -> list[str]:
    """The invariant's violations once they are gone, or those left after ``seconds``.

    The broker and its workers may finish an interrupted outcome in the background; this gives
    them a bounded time to do it.
    """
    problems: list[str] = []

    def clean() -> bool:
        nonlocal problems
        try:
            problems = invariant_violations(stack, provider, **checks)
        except Exception as exc:  # the database may still be recovering
            problems = [f"cannot read the database: {type(exc).__name__}"]
        return not problems

    wait_until(clean, seconds, interval=0.25)
    return problems


def table(title: str, rows: Mapping[str, object]) -> str:
    """A small two-column table for the test's printed report."""
    width = max((len(str(key)) for key in rows), default=0)
    lines = [title] + [f"  {key!s:<{width}}  {value}" for key, value in rows.items()]
    return "\n".join(lines)
