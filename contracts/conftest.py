"""Fixtures for the contract suite: one app on a fresh SQLite database, seeded."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from broker import providers
from broker.enterprises import create_enterprise, record_registration
from broker.migrate import upgrade_database
from broker.runtime import open_runtime
from broker.settings import load_settings
from handlers.app import create_app

REPO = Path(__file__).resolve().parent.parent


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
