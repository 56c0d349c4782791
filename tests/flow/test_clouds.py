"""National clouds by one setting: CTT_CLOUD picks the login and Graph hosts.

The emulator plays each cloud under that cloud's host names: its issuer is the
cloud's login host, and it accepts the cloud's Graph ``/.default`` scope.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from broker import providers
from broker.credentials import load_credentials
from broker.enterprises import create_enterprise
from broker.microsoft import Microsoft
from broker.runtime import Runtime
from broker.settings import load_settings
from emulator import Emulator, create_emulator_app
from sandbox.emulator_setup import emulator_config_for
from tests.conftest import CALLBACK, FakeClock
from tests.flow.conftest import BROKER, CONTOSO_ADMIN, World, returned
from tests.shared_app import serving_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

HOSTS = {
    "public": ("https://login.microsoftonline.com", "https://graph.microsoft.com"),
    "usgov": ("https://login.microsoftonline.us", "https://graph.microsoft.us"),
    "usgov-dod": ("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
    "china": ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
}


@pytest.mark.parametrize("cloud", sorted(HOSTS))
def test_cloud_sets_login_and_graph_hosts(cloud: str) -> None:
    settings = load_settings({"CTT_MODE": "sandbox", "CTT_CLOUD": cloud})
    assert (settings.login_host, settings.graph_host) == HOSTS[cloud]


def test_explicit_hosts_override_the_cloud() -> None:
    settings = load_settings(
        {
            "CTT_CLOUD": "china",
            "CTT_LOGIN_HOST": "https://login.example.test",
            "CTT_GRAPH_HOST": "https://graph.example.test",
        }
    )
    assert (settings.login_host, settings.graph_host) == (
        "https://login.example.test",
        "https://graph.example.test",
    )


def test_unknown_cloud_is_refused() -> None:
    with pytest.raises(ValueError, match="CTT_CLOUD"):
        load_settings({"CTT_CLOUD": "germany"})


@pytest.fixture(params=sorted(HOSTS))
def cloud_world(
    request: pytest.FixtureRequest, runtime: Runtime, clock: FakeClock, tmp_path: Any
) -> Iterator[World]:
    login_host, graph_host = HOSTS[request.param]
    settings = replace(
        runtime.settings,
        public_base_url=BROKER,
        login_host=login_host,
        login_browser_url=login_host,
        graph_host=graph_host,
        login_transport_url=None,
        data_dir=tmp_path,
        consent_confirm_attempts=2,
        consent_confirm_interval_seconds=1.0,
    )
    config = emulator_config_for(runtime.catalog, settings.redirect_uri, issuer_base_url=login_host)
    emulator = Emulator(
        replace(config, graph_resource=graph_host), clock=lambda: clock().timestamp()
    )
    emulator_app = create_emulator_app(emulator)
    msal_http = TestClient(emulator_app, base_url=login_host)
    credentials = load_credentials(settings, runtime.catalog, runtime.random_bytes)
    microsoft = Microsoft(settings, credentials, msal_http, clock, sleep=lambda s: None)
    cloud_runtime = replace(
        runtime, settings=settings, credentials=credentials, microsoft=microsoft
    )
    broker = serving_app(cloud_runtime).test_client(base_url=BROKER, raise_server_exceptions=False)
    login = TestClient(emulator_app, base_url=login_host)
    provider, key = providers.create_provider(
        cloud_runtime, "Acme Telecom", callback_urls=(CALLBACK,)
    )
    enterprise = create_enterprise(
        cloud_runtime, provider.provider_id, name="Contoso", external_id="c1"
    )
    yield World(
        runtime=cloud_runtime,
        emulator=emulator,
        clock=clock,
        broker=broker,
        login=login,
        provider_id=provider.provider_id,
        api_key=key.api_key,
        enterprise_id=enterprise.enterprise_id,
    )
    msal_http.close()
    login.close()


def test_sign_in_and_consent_in_each_cloud(cloud_world: World) -> None:
    """The ID token's issuer is the cloud's login host; the consent check uses its Graph scope."""
    launched = cloud_world.click(cloud_world.link("REGISTRATION")["url"])
    assert launched.headers["location"].startswith(cloud_world.runtime.settings.login_host)
    registered = returned(
        cloud_world.callback(cloud_world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    )
    assert registered["status"] == "completed"
    consented = returned(cloud_world.run("GET_PRESENCE_CONSENT", CONTOSO_ADMIN))
    assert consented["status"] == "completed", consented
