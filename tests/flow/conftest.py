"""End-to-end harness: the broker and the Microsoft emulator, in process, over real HTTP shapes.

The admin's browser is two cookie-keeping HTTP clients (one per host). MSAL
talks to the emulator through a TestClient, an ``httpx.Client``, exactly as it
would through the production client; the emulator shares the test's clock.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from broker import providers
from broker.credentials import load_credentials
from broker.enterprises import create_enterprise, record_registration
from broker.microsoft import Microsoft
from broker.runtime import Runtime
from emulator import Emulator, complete_browser_flow, create_emulator_app
from emulator.seed import CONTOSO_TENANT_ID
from sandbox.emulator_setup import emulator_config_for
from tests.conftest import CALLBACK, FakeClock
from tests.shared_app import serving_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

LOGIN = "https://login.emulator.test"
BROKER = "https://broker.test"

CONTOSO_ADMIN = "admin@contoso.onmicrosoft.com"
CONTOSO_USER = "user@contoso.onmicrosoft.com"
CONTOSO_DECLINER = "decliner@contoso.onmicrosoft.com"
FABRIKAM_ADMIN = "admin@fabrikam.onmicrosoft.com"


@dataclass
class World:
    """Everything one end-to-end test drives."""

    runtime: Runtime
    emulator: Emulator
    clock: FakeClock
    broker: Any
    login: Any
    provider_id: str
    api_key: str
    enterprise_id: str
    sleeps: list[float] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def register(self, tenant: str = CONTOSO_TENANT_ID) -> None:
        record_registration(self.runtime, self.provider_id, self.enterprise_id, tenant)

    def link(self, action_type: str, **extra: Any) -> dict[str, Any]:
        body = {
            "actionType": action_type,
            "enterpriseId": self.enterprise_id,
            "callbackUrl": CALLBACK,
            "state": "portal-state-42",
            **extra,
        }
        response = self.broker.post("/enterprise/getActionItemUrl", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def click(self, url: str, browser: Any | None = None) -> Any:
        """The admin clicks the link: the broker answers with a redirect to Microsoft."""
        return (browser or self.broker).get(urlsplit(url).path, follow_redirects=False)

    def at_microsoft(
        self, location: str, username: str, decision: str = "accept"
    ) -> dict[str, str]:
        """The admin picks an account and answers Microsoft; returns the callback parameters."""
        result = complete_browser_flow(self.login, location, username=username, decision=decision)  # type: ignore[arg-type]
        assert result.redirect_uri == f"{BROKER}/oauth/callback"
        return dict(result.params)

    def callback(self, params: dict[str, str], browser: Any | None = None) -> Any:
        return (browser or self.broker).get(
            "/oauth/callback?" + urlencode(params), follow_redirects=False
        )

    def run(self, action_type: str, username: str, decision: str = "accept", **extra: Any) -> Any:
        """A whole round trip; returns the broker's final answer."""
        launched = self.click(self.link(action_type, **extra)["url"])
        assert launched.status_code == 302, launched.text
        return self.callback(self.at_microsoft(launched.headers["location"], username, decision))

    def redeem(self, result_code: str, headers: dict[str, str] | None = None) -> Any:
        return self.broker.post(
            "/results/redeem", json={"resultCode": result_code}, headers=headers or self.headers
        )


def returned(response: Any) -> dict[str, str]:
    """The query the provider's callback receives (one value per name)."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(CALLBACK)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


@pytest.fixture
def world(runtime: Runtime, clock: FakeClock, tmp_path: Any) -> Iterator[World]:
    settings = replace(
        runtime.settings,
        public_base_url=BROKER,
        login_host=LOGIN,
        login_browser_url=LOGIN,
        login_transport_url=None,
        data_dir=tmp_path,
        consent_confirm_attempts=2,
        consent_confirm_interval_seconds=1.0,
    )
    emulator = Emulator(
        emulator_config_for(runtime.catalog, settings.redirect_uri, issuer_base_url=LOGIN),
        clock=lambda: clock().timestamp(),
    )
    emulator_app = create_emulator_app(emulator)
    msal_http = TestClient(emulator_app, base_url=LOGIN)
    credentials = load_credentials(settings, runtime.catalog, runtime.random_bytes)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock.advance(seconds=seconds)

    microsoft = Microsoft(settings, credentials, msal_http, clock, sleep=sleep)
    flow_runtime = replace(runtime, settings=settings, credentials=credentials, microsoft=microsoft)
    broker = serving_app(flow_runtime).test_client(base_url=BROKER, raise_server_exceptions=False)
    login = TestClient(emulator_app, base_url=LOGIN)
    provider, key = providers.create_provider(
        flow_runtime, "Acme Telecom", callback_urls=(CALLBACK,)
    )
    enterprise = create_enterprise(
        flow_runtime, provider.provider_id, name="Contoso", external_id="c1"
    )
    # Entered: each client keeps one event loop for the whole test, instead of starting
    # a loop and a thread pool per request.
    with broker, msal_http, login:
        yield World(
            runtime=flow_runtime,
            emulator=emulator,
            clock=clock,
            broker=broker,
            login=login,
            provider_id=provider.provider_id,
            api_key=key.api_key,
            enterprise_id=enterprise.enterprise_id,
            sleeps=sleeps,
        )
    msal_http.close()
    login.close()
