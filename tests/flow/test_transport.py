"""The production HTTP path to Microsoft, against a real emulator server on loopback.

Only settings differ from production: the login host is https, and the
sandbox transport sends its traffic to the emulator's http port. Timeouts are
real socket timeouts here, not simulated.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import uvicorn

from broker import errors
from broker.catalog import load_catalog
from broker.credentials import load_credentials
from broker.microsoft import Microsoft, make_http_client
from broker.runtime import system_clock
from broker.settings import load_settings
from emulator import Emulator, create_emulator_app
from emulator.seed import CONTOSO_TENANT_ID
from sandbox.emulator_setup import emulator_config_for

LOGIN = "https://login.emulator.test"


@pytest.fixture(scope="module")
def emulator_server() -> Iterator[tuple[Emulator, str]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    catalog = load_catalog()
    emulator = Emulator(
        emulator_config_for(catalog, "http://127.0.0.1:8080/oauth/callback", issuer_base_url=LOGIN)
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_emulator_app(emulator), host="127.0.0.1", port=port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield emulator, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def microsoft_for(url: str, tmp_path: Path, timeout: float = 2.0) -> Microsoft:
    settings = load_settings(
        {
            "CTT_DATA_DIR": str(tmp_path),
            "CTT_LOGIN_TRANSPORT_URL": url,
            "CTT_MICROSOFT_TIMEOUT_SECONDS": "1",
            "CTT_CONSENT_CONFIRM_ATTEMPTS": "1",
        }
    )
    settings = replace(settings, microsoft_timeout_seconds=timeout)
    credentials = load_credentials(settings, load_catalog(), secrets.token_bytes)
    return Microsoft(settings, credentials, make_http_client(settings), system_clock)


def test_https_login_host_is_routed_to_the_emulator(
    emulator_server: tuple[Emulator, str], tmp_path: Path
) -> None:
    emulator, url = emulator_server
    microsoft = microsoft_for(url, tmp_path)
    spec = load_catalog().get("GET_PRESENCE_CONSENT")
    assert microsoft.confirm_consent(spec, CONTOSO_TENANT_ID).visible is False
    client_id = (
        load_credentials(microsoft._settings, load_catalog(), __import__("secrets").token_bytes)
        .app(spec.app)
        .client_id
    )
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, client_id)
    check = microsoft.confirm_consent(spec, CONTOSO_TENANT_ID)
    assert check.visible and check.tenant_id == CONTOSO_TENANT_ID
    assert set(spec.scopes) <= set(check.roles)


def test_slow_microsoft_times_out_with_its_code(
    emulator_server: tuple[Emulator, str], tmp_path: Path
) -> None:
    emulator, url = emulator_server
    microsoft = microsoft_for(url, tmp_path, timeout=1.0)
    emulator.set_token_delay(2.5)
    try:
        started = time.monotonic()
        with pytest.raises(errors.MicrosoftTimeout):
            microsoft.confirm_consent(load_catalog().get("GET_CDR_CONSENT"), CONTOSO_TENANT_ID)
        assert time.monotonic() - started < 8  # bounded: one retry of the transport at most
    finally:
        emulator.set_token_delay(0)


def test_unreachable_microsoft_is_reported_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    microsoft = microsoft_for(dead, tmp_path)
    with pytest.raises(errors.MicrosoftUnavailable):
        microsoft.confirm_consent(load_catalog().get("GET_CDR_CONSENT"), CONTOSO_TENANT_ID)
