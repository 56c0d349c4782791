"""Fixtures for the contract suite: one app on a fresh SQLite database, seeded."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker import providers
from broker.enterprises import create_enterprise, record_registration
from broker.migrate import upgrade_database
from broker.runtime import open_runtime
from broker.settings import load_settings
from handlers.app import create_app
from sandbox.launch import launched_sandbox

REPO = Path(__file__).resolve().parent.parent


def read_spec() -> dict[str, Any]:
    """The top-level ``openapi.yaml`` as written, parsed here (not through the app's loader).

    libyaml's safe parser when PyYAML has it: the pure-Python one took 0.2 s a module.
    """
    text = (REPO / "openapi.yaml").read_text("utf-8")
    loader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
    spec: dict[str, Any] = yaml.load(text, Loader=loader)  # noqa: S506 (a safe loader)
    return spec


@dataclass(frozen=True)
class ContractApp:
    """The app under contract test and the credentials to drive it."""

    app: Any
    api_key: str
    enterprise_id: str
    registered_enterprise_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@cache
def build_contract_app() -> ContractApp:
    """One seeded app per test process (Schemathesis needs it at collection time)."""
    data = Path(tempfile.mkdtemp(prefix="ctt-contract-"))
    settings = load_settings(
        {
            "CTT_DATA_DIR": str(data),
            "CTT_PUBLIC_BASE_URL": "https://broker.test",
            "CTT_MODE": "sandbox",
            # Every answer checked against the spec (also the sandbox default; said here
            # because the contract depends on it).
            "CTT_VALIDATE_RESPONSES": "1",
            # Schemathesis sends thousands of requests from one IP with one key.
            "CTT_RATE_LIMIT_ADMIN": "100000/minute",
            "CTT_RATE_LIMIT_LINK": "100000/minute",
            "CTT_RATE_LIMIT_AUTH_FAILURES": "100000/minute",
            "CTT_RATE_LIMIT_API": "100000/minute",
        }
    )
    runtime = open_runtime(settings)
    upgrade_database(runtime.engine)
    provider, key = providers.create_provider(
        runtime, "Contract Provider", callback_urls=("https://portal.example.com/teams/callback",)
    )
    plain = create_enterprise(runtime, provider.provider_id, name="Plain", external_id="plain")
    bound = create_enterprise(runtime, provider.provider_id, name="Bound", external_id="bound")
    record_registration(
        runtime, provider.provider_id, bound.enterprise_id, "4c1d2a0e-5a0b-4f6c-9d0e-1a2b3c4d5e6f"
    )
    return ContractApp(
        create_app(settings, runtime), key.api_key, plain.enterprise_id, bound.enterprise_id
    )


@pytest.fixture(scope="session")
def contract_app() -> ContractApp:
    return build_contract_app()


# -- Node tooling (spec lint, TypeScript client) -----------------------------------------------
# `.ci/run` installs it once, before the tests: `npm ci --prefix contracts` (versions pinned in
# contracts/package.json and contracts/package-lock.json). A missing install fails, never skips.

CONTRACTS = REPO / "contracts"
NODE_BIN = CONTRACTS / "node_modules" / ".bin"
# No telemetry, no update checks: the suite talks to nothing but its own servers.
NODE_ENV = {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true", "CI": "true"}


def node_tool(name: str) -> Path:
    """The path of an npm-installed command in contracts/node_modules, or a clear failure."""
    path = NODE_BIN / name
    if not path.exists():
        pytest.fail(
            f"{path.relative_to(REPO)} is missing: run `npm ci --prefix contracts` "
            "(Node >= 20.19) before the contract suite",
            pytrace=False,
        )
    return path


# -- The sandbox (`python -m sandbox`) as a subprocess, for the generated-client flows ----------


@dataclass(frozen=True)
class RunningSandbox:
    """Broker, Microsoft emulator and demo portal on free loopback ports."""

    broker: str
    emulator: str
    portal: str
    data_dir: Path
    log: Path

    @property
    def api_key(self) -> str:
        record = json.loads((self.data_dir / "sandbox-provider.json").read_text("utf-8"))
        return str(record["apiKey"])

    @property
    def callback_url(self) -> str:
        return f"{self.portal}/callback"


@pytest.fixture(scope="session")
def running_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """``python -m sandbox`` started once per session."""
    yield from _sandbox(tmp_path_factory)


@pytest.fixture
def fresh_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """``python -m sandbox`` of the test's own, on an empty database: nothing another test
    did (under pytest-xdist, in any order) changes what it holds."""
    yield from _sandbox(tmp_path_factory)


def _sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    with launched_sandbox(tmp_path_factory.mktemp("contract-sandbox")) as started:
        yield RunningSandbox(
            started.broker, started.emulator, started.portal, started.data_dir, started.log
        )
