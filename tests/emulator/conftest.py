"""Fixtures: an in-process emulator with a fake clock, reached through a Starlette TestClient."""

from __future__ import annotations

from collections.abc import Iterator

import msal
import pytest
from emulator_test_support import ISSUER, FakeClock, MakeApp, TestClient

from emulator import Emulator, create_emulator_app, default_config
from emulator.seed import CONTOSO_TENANT_ID, SIGNIN_APP_ID, SIGNIN_APP_SECRET


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Emulator:
    return Emulator(default_config(ISSUER, enable_control_routes=True), clock=clock)


@pytest.fixture
def client(emulator: Emulator) -> Iterator[TestClient]:
    with TestClient(create_emulator_app(emulator), base_url=ISSUER) as test_client:
        yield test_client


@pytest.fixture
def make_app(client: TestClient) -> MakeApp:
    """A real MSAL confidential client whose HTTP goes to the in-process emulator."""

    def make(
        client_id: str = SIGNIN_APP_ID,
        secret: str = SIGNIN_APP_SECRET,
        tenant: str = CONTOSO_TENANT_ID,
    ) -> msal.ConfidentialClientApplication:
        # A TestClient is an httpx.Client, which satisfies MSAL's http_client contract
        # (get/post returning objects with status_code, text, headers).
        return msal.ConfidentialClientApplication(
            client_id,
            client_credential=secret,
            authority=f"{ISSUER}/{tenant}",
            http_client=client,
            instance_discovery=False,
            validate_authority=False,
        )

    return make
