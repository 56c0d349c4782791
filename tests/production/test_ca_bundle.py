"""CTT_CA_BUNDLE, and only it, adds trust anchors for the calls to Microsoft."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from broker.microsoft import make_http_client
from broker.settings import Settings
from emulator import Emulator, create_emulator_app
from emulator.seed import default_config
from sandbox.launch import free_port
from tests.production.pki import TestAuthority, TlsServer


@pytest.fixture
def private_login(tmp_path: Path) -> tuple[TestAuthority, str]:
    pki = TestAuthority(tmp_path)
    files = pki.issue("login")
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    app = create_emulator_app(Emulator(default_config(issuer_base_url=base, browser_base_url=base)))
    with TlsServer(app, port, files.certfile, files.keyfile):
        yield pki, base


def production(settings: Settings, **changes: object) -> Settings:
    return replace(settings, login_transport_url=None, **changes)  # type: ignore[arg-type]


def test_private_ca_is_trusted_through_the_setting(
    settings: Settings, private_login: tuple[TestAuthority, str]
) -> None:
    pki, base = private_login
    with make_http_client(production(settings, ca_bundle=str(pki.bundle))) as client:
        discovery = client.get(f"{base}/common/v2.0/.well-known/openid-configuration")
    assert discovery.status_code == 200


def test_environment_bundle_cannot_widen_trust(
    settings: Settings, private_login: tuple[TestAuthority, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host environment sets REQUESTS_CA_BUNDLE / SSL_CERT_FILE to an interception CA:
    the broker's calls to Microsoft still trust only the public CAs and CTT_CA_BUNDLE."""
    pki, base = private_login
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(pki.bundle))
    assert os.environ["SSL_CERT_FILE"] == str(pki.bundle)
    with make_http_client(production(settings)) as client, pytest.raises(httpx.ConnectError):
        client.get(f"{base}/common/v2.0/.well-known/openid-configuration")
