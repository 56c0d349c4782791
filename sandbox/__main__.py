"""``python -m sandbox``: the whole flow on one laptop, no Microsoft tenant needed.

Migrates the database, creates the demo provider, then runs three servers until Ctrl-C:

* the Microsoft identity platform emulator (in process, ``SANDBOX_EMULATOR_PORT``, 8400),
* the broker, ``ctt-broker serve`` (a gunicorn child process, ``CTT_BIND``, 8080),
* the demo provider portal (in process, ``SANDBOX_PORTAL_PORT``, 8090).

Settings come from the environment exactly as for the broker. The two sandbox ports carry no
``CTT_`` prefix because the broker refuses unknown ``CTT_`` variables. When only some of the
addresses are given, the others are derived so that they agree (e.g. ``CTT_BIND=127.0.0.1:9000``
alone also moves ``CTT_PUBLIC_BASE_URL`` to port 9000).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType
from urllib.parse import urlsplit

import httpx
import uvicorn
from starlette.types import ASGIApp

from broker import cli
from broker.catalog import load_catalog
from broker.settings import Settings, SettingsError, load_settings
from emulator import Emulator, create_emulator_app
from sandbox.emulator_setup import emulator_config_for
from sandbox.portal import PortalConfig, create_portal_app

EMULATOR_PORT_VARIABLE = "SANDBOX_EMULATOR_PORT"
PORTAL_PORT_VARIABLE = "SANDBOX_PORTAL_PORT"
DEFAULT_BIND = "127.0.0.1:8080"
DEFAULT_EMULATOR_PORT = 8400
DEFAULT_PORTAL_PORT = 8090
STARTUP_TIMEOUT_SECONDS = 30.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

DEMO_USERS = (
    ("admin@contoso.onmicrosoft.com", "Global Admin: registration, sign-ins and consents succeed"),
    ("user@contoso.onmicrosoft.com", "not an admin: fails with NOT_GLOBAL_ADMIN"),
    ("decliner@contoso.onmicrosoft.com", "Global Admin who cancels: fails with CONSENT_DECLINED"),
    (
        "admin@fabrikam.onmicrosoft.com",
        "another tenant: LOGIN_ENTERPRISE_ADMIN fails with LOGIN_WRONG_TENANT",
    ),
)


class SandboxError(Exception):
    """The sandbox cannot start; the message says why."""


@dataclass(frozen=True)
class Plan:
    """The addresses of the three servers, agreed with the broker's settings."""

    env: dict[str, str]
    broker_bind: str
    broker_url: str
    emulator_port: int
    portal_port: int

    @property
    def portal_url(self) -> str:
        """Where a browser opens the demo portal."""
        return f"http://127.0.0.1:{self.portal_port}"


def plan_from_environment(source: Mapping[str, str]) -> Plan:
    """Derive consistent addresses from ``source``; returns the environment for the broker."""
    env = dict(source)
    bind = env.get("CTT_BIND") or ""
    public = env.get("CTT_PUBLIC_BASE_URL") or ""
    if not bind:
        # A loopback public URL names the port the broker must listen on.
        parts = urlsplit(public)
        if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS and parts.port:
            bind = f"127.0.0.1:{parts.port}"
        else:
            bind = DEFAULT_BIND
        env["CTT_BIND"] = bind
    host, _, port = bind.rpartition(":")
    # A wildcard bind is reached on loopback by the portal's backend and the health check.
    connect_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "[::]": "[::1]"}.get(host, host)  # noqa: S104
    broker_url = f"http://{connect_host}:{port}"
    if not public:
        env["CTT_PUBLIC_BASE_URL"] = broker_url

    emulator_port = _port(env, EMULATOR_PORT_VARIABLE, 0)
    if not emulator_port:
        # An emulator URL given without a port variable names the port to serve it on.
        given = env.get("CTT_LOGIN_TRANSPORT_URL") or env.get("CTT_LOGIN_BROWSER_URL") or ""
        emulator_port = urlsplit(given).port or DEFAULT_EMULATOR_PORT
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    for name in ("CTT_LOGIN_BROWSER_URL", "CTT_LOGIN_TRANSPORT_URL"):
        if not env.get(name):
            env[name] = emulator_url
    portal_port = _port(env, PORTAL_PORT_VARIABLE, DEFAULT_PORTAL_PORT)
    return Plan(
        env=env,
        broker_bind=bind,
        broker_url=broker_url,
        emulator_port=emulator_port,
        portal_port=portal_port,
    )


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SandboxError(f"{name}: {value!r} is not a port number")
    return int(value)


def prepare(plan: Plan, settings: Settings) -> dict[str, str]:
    """Migrate, create the demo provider and allow the portal's callback; returns its record."""
    quiet = io.StringIO()
    problems = io.StringIO()
    # The CLI prints the API key; the banner shows it once, so its output is kept quiet.
    if cli.main(["db", "upgrade"], env=plan.env, out=quiet, err=problems) != 0:
        raise SandboxError(f"ctt-broker db upgrade failed: {problems.getvalue().strip()}")
    if cli.main(["sandbox-provider"], env=plan.env, out=quiet, err=problems) != 0:
        raise SandboxError(f"ctt-broker sandbox-provider failed: {problems.getvalue().strip()}")
    record: dict[str, str] = json.loads(
        (settings.data_dir / "sandbox-provider.json").read_text("utf-8")
    )
    for path in ("/callback", "/walkthrough"):
        callback = f"{plan.portal_url}{path}"
        if callback in cli.SANDBOX_CALLBACKS:
            continue
        # A portal on another port needs its callbacks on the provider's allow-list.
        argv = ["provider", "add-callback", record["providerId"], callback]
        if cli.main(argv, env=plan.env, out=quiet, err=problems) != 0:
            raise SandboxError(f"cannot allow {callback}: {problems.getvalue().strip()}")
    webhook = f"{plan.portal_url}/webhooks"
    if webhook != cli.SANDBOX_WEBHOOK:
        argv = ["provider", "set-webhook", record["providerId"], webhook]
        if cli.main(argv, env=plan.env, out=quiet, err=problems) != 0:
            raise SandboxError(f"cannot send webhooks to {webhook}: {problems.getvalue().strip()}")
    return record


class ThreadServer:
    """A uvicorn server in a daemon thread (it installs no signal handlers off the main thread)."""

    def __init__(self, name: str, app: ASGIApp, port: int) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            # Access logs would print query strings (states, result codes): keep them off.
            access_log=False,
            log_level="warning",
            lifespan="on",
        )
        self.name = name
        self.port = port
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=name, daemon=True)

    def start(self) -> None:
        """Start and wait until it listens; raises :class:`SandboxError` if it cannot."""
        self.thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SandboxError(
                    f"the {self.name} could not listen on 127.0.0.1:{self.port} (port in use?)"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Ask the server to exit and wait for it (bounded)."""
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=10)


def start_broker(plan: Plan) -> subprocess.Popen[bytes]:
    """``ctt-broker serve`` as a child process; returns once ``/health`` answers 200."""
    command = shutil.which("ctt-broker", path=os.path.dirname(sys.executable))
    if command is None:
        raise SandboxError("the ctt-broker console script is not installed next to this Python")
    child = subprocess.Popen([command, "serve"], env=plan.env)  # noqa: S603
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        try:
            if httpx.get(f"{plan.broker_url}/health", timeout=1).status_code == 200:
                return child
        except httpx.TransportError:
            pass
        if child.poll() is not None:
            raise SandboxError(f"ctt-broker serve exited with code {child.returncode}")
        if time.monotonic() > deadline:
            stop_broker(child)
            raise SandboxError(f"the broker did not answer {plan.broker_url}/health in time")
        time.sleep(0.2)


def start_worker(plan: Plan) -> subprocess.Popen[bytes]:
    """``ctt-broker worker``: delivers webhooks; confirms slow consents, purges, retention."""
    command = shutil.which("ctt-broker", path=os.path.dirname(sys.executable))
    if command is None:
        raise SandboxError("the ctt-broker console script is not installed next to this Python")
    return subprocess.Popen(  # noqa: S603
        [command, "worker", "--interval", "2"], env=plan.env, stdout=subprocess.DEVNULL
    )


def stop_broker(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL if it lingers."""
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout=25)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=5)


def banner(plan: Plan, settings: Settings, record: Mapping[str, str]) -> str:
    """What to open, and who to sign in as."""
    users = "\n".join(f"    {name:<36} {what}" for name, what in DEMO_USERS)
    key_file = settings.data_dir / "sandbox-provider.json"
    return f"""
ctt-broker sandbox is running (nothing here calls Microsoft).

  Open the demo provider portal   {plan.portal_url}/
  Broker API docs                 {settings.public_base_url}/ui/
  Broker API                      {settings.public_base_url}
  Microsoft emulator              {settings.login_browser_url}  (login host {settings.login_host})

  Sandbox provider                {record["providerId"]}
  API key                         {record["apiKey"]}
                                  (kept in {key_file})

  Demo users at the emulator's account picker (no passwords):
{users}

Press Ctrl-C to stop.
"""


def run(source: Mapping[str, str]) -> int:
    """Start everything, wait for Ctrl-C or SIGTERM, stop everything; returns the exit code."""
    plan = plan_from_environment(source)
    try:
        settings = load_settings(plan.env)
    except SettingsError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return cli.EXIT_SETTINGS
    if settings.mode != "sandbox":
        print("sandbox: CTT_MODE must be sandbox", file=sys.stderr)
        return cli.EXIT_SETTINGS
    record = prepare(plan, settings)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    emulator = Emulator(
        emulator_config_for(
            load_catalog(),
            settings.redirect_uri,
            issuer_base_url=settings.login_host,
            browser_base_url=settings.login_browser_url,
        )
    )
    servers: list[ThreadServer] = []
    child: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None
    try:
        servers.append(ThreadServer("emulator", create_emulator_app(emulator), plan.emulator_port))
        servers[-1].start()
        child = start_broker(plan)
        worker = start_worker(plan)
        portal_config = PortalConfig(
            broker_url=plan.broker_url,
            broker_public_url=settings.public_base_url,
            provider_id=record["providerId"],
            api_key=record["apiKey"],
            webhook_secret=record.get("webhookSecret"),
            portal_url=plan.portal_url,
        )
        servers.append(ThreadServer("portal", create_portal_app(portal_config), plan.portal_port))
        servers[-1].start()
        print(banner(plan, settings, record), flush=True)
        while not stop.wait(0.5):
            if child.poll() is not None:
                print(f"sandbox: the broker exited (code {child.returncode})", file=sys.stderr)
                return 1
        print("sandbox: stopping", file=sys.stderr, flush=True)
        return 0
    finally:
        if worker is not None:
            stop_broker(worker)
        if child is not None:
            stop_broker(child)
        for server in reversed(servers):
            server.stop()


def main() -> int:
    """Entry point of ``python -m sandbox``."""
    # Libraries stay at WARNING: httpx would log every request URL, Alembic every migration.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("sandbox").setLevel(logging.INFO)
    try:
        return run(os.environ)
    except SandboxError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
