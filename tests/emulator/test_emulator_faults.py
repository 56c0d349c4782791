"""Fault injection, key rotation, control routes, reset and concurrency."""

from __future__ import annotations

import threading
import time

import jwt
import pytest
from emulator_test_support import ISSUER, REDIRECT_URI, MakeApp, TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from msal.exceptions import MsalServiceError

from emulator import (
    GRAPH_DEFAULT_SCOPE,
    EmulatorConfig,
    EntraError,
    complete_browser_flow,
    create_emulator_app,
)
from emulator import Emulator as EmulatorType
from emulator.seed import (
    CONTOSO_ADMIN,
    CONTOSO_TENANT_ID,
    SIGNIN_APP_ID,
    SIGNIN_APP_SECRET,
    USER_SYNC_APP_ID,
    USER_SYNC_APP_SECRET,
    default_config,
)

pytestmark = pytest.mark.filterwarnings("ignore:response_mode=:UserWarning")

TOKEN_URL = f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/token"
CLIENT_CREDENTIALS = {
    "grant_type": "client_credentials",
    "client_id": USER_SYNC_APP_ID,
    "client_secret": USER_SYNC_APP_SECRET,
    "scope": GRAPH_DEFAULT_SCOPE,
}


def _id_token(make_app: MakeApp, client: TestClient) -> str:
    app = make_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI)
    result = complete_browser_flow(
        client, flow["auth_uri"], username=CONTOSO_ADMIN.preferred_username
    )
    token: str = app.acquire_token_by_auth_code_flow(flow, result.params)["id_token"]
    return token


def _published_kids(client: TestClient) -> list[str]:
    keys = client.get(f"/{CONTOSO_TENANT_ID}/discovery/v2.0/keys").json()["keys"]
    return [k["kid"] for k in keys]


def test_token_endpoint_answers_5xx_for_the_next_n_calls_then_recovers(
    client: TestClient, emulator: EmulatorType
) -> None:
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    emulator.fail_next_token_requests(2, status=503)
    first = client.post(TOKEN_URL, data=CLIENT_CREDENTIALS)
    second = client.post(TOKEN_URL, data=CLIENT_CREDENTIALS)
    third = client.post(TOKEN_URL, data=CLIENT_CREDENTIALS)
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.json()["error"] == "temporarily_unavailable"


def test_msal_raises_msal_service_error_on_an_injected_5xx(
    make_app: MakeApp, emulator: EmulatorType
) -> None:
    """MSAL 1.39 raises on 5xx instead of returning an error dict: callers must catch it."""
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    emulator.fail_next_token_requests(1, status=500)
    app = make_app(USER_SYNC_APP_ID, USER_SYNC_APP_SECRET)
    with pytest.raises(MsalServiceError):
        app.acquire_token_for_client([GRAPH_DEFAULT_SCOPE])


def test_token_delay_slows_the_response(client: TestClient, emulator: EmulatorType) -> None:
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    emulator.set_token_delay(0.3)
    started = time.monotonic()
    assert client.post(TOKEN_URL, data=CLIENT_CREDENTIALS).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_rotation_keeps_the_old_key_published_and_signs_with_the_new_one(
    make_app: MakeApp, client: TestClient, emulator: EmulatorType
) -> None:
    old_kid = emulator.active_kid
    before = _id_token(make_app, client)
    new_kid = emulator.rotate_signing_key()
    after = _id_token(make_app, client)

    assert _published_kids(client) == [old_kid, new_kid]
    assert jwt.get_unverified_header(before)["kid"] == old_kid
    assert jwt.get_unverified_header(after)["kid"] == new_kid
    jwks = jwt.PyJWKSet.from_dict(client.get(f"/{CONTOSO_TENANT_ID}/discovery/v2.0/keys").json())
    for token in (before, after):
        key = jwks[jwt.get_unverified_header(token)["kid"]]
        jwt.decode(token, key, algorithms=["RS256"], audience=SIGNIN_APP_ID)


def test_unpublished_signing_key_yields_an_unknown_kid(
    make_app: MakeApp, client: TestClient, emulator: EmulatorType
) -> None:
    kid = emulator.use_unpublished_signing_key()
    token = _id_token(make_app, client)
    assert jwt.get_unverified_header(token)["kid"] == kid
    assert kid not in _published_kids(client)


def test_id_token_claim_overrides_apply_to_the_next_token_only(
    make_app: MakeApp, client: TestClient, emulator: EmulatorType
) -> None:
    emulator.override_next_id_token_claims({"aud": "someone-else", "wids": None})
    tampered = jwt.decode(_id_token(make_app, client), options={"verify_signature": False})
    assert tampered["aud"] == "someone-else" and "wids" not in tampered
    normal = jwt.decode(_id_token(make_app, client), options={"verify_signature": False})
    assert normal["aud"] == SIGNIN_APP_ID


def test_msal_refuses_an_id_token_whose_nonce_was_tampered_with(
    make_app: MakeApp, client: TestClient, emulator: EmulatorType
) -> None:
    emulator.override_next_id_token_claims({"nonce": "not-the-flow-nonce"})
    with pytest.raises(RuntimeError, match="nonce"):
        _id_token(make_app, client)


def test_control_routes_are_absent_unless_enabled() -> None:
    client = TestClient(create_emulator_app(EmulatorType(default_config(ISSUER))), base_url=ISSUER)
    assert client.post("/_emulator/reset", json={}).status_code == 404
    assert client.post("/_emulator/token-failures", json={"count": 1}).status_code == 404


def test_control_routes_drive_faults_keys_consents_and_reset(
    client: TestClient, emulator: EmulatorType
) -> None:
    assert (
        client.post(
            "/_emulator/consents/grant",
            json={"tenant": "contoso.onmicrosoft.com", "client_id": USER_SYNC_APP_ID},
        ).status_code
        == 200
    )
    assert client.post(TOKEN_URL, data=CLIENT_CREDENTIALS).status_code == 200

    assert client.post("/_emulator/token-failures", json={"count": 1, "status": 502}).json()["ok"]
    assert client.post(TOKEN_URL, data=CLIENT_CREDENTIALS).status_code == 502

    kid = client.post("/_emulator/rotate-keys", json={}).json()["result"]["kid"]
    assert kid == emulator.active_kid

    assert client.post("/_emulator/reset").status_code == 200
    assert client.post(TOKEN_URL, data=CLIENT_CREDENTIALS).json()["error_codes"] == [700016]

    assert client.post("/_emulator/consent-propagation-delay", json={"seconds": 30}).json()["ok"]
    assert client.post("/_emulator/token-delay", json={"seconds": 0}).json()["ok"]
    assert client.post("/_emulator/token-failures", json={"count": "x"}).status_code == 400


def test_unknown_tenant_in_the_python_api_raises_entra_error(emulator: EmulatorType) -> None:
    with pytest.raises(EntraError):
        emulator.grant_admin_consent("nosuch.example", USER_SYNC_APP_ID)


def test_a_code_redeemed_concurrently_is_honoured_once(
    client: TestClient, emulator: EmulatorType, make_app: MakeApp
) -> None:
    """Two racing redemptions of one code: exactly one gets tokens."""
    app = make_app()
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI)
    code = complete_browser_flow(
        client, flow["auth_uri"], username=CONTOSO_ADMIN.preferred_username
    ).params["code"]
    form = {
        "grant_type": "authorization_code",
        "client_id": SIGNIN_APP_ID,
        "client_secret": SIGNIN_APP_SECRET,
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": flow["code_verifier"],
        "scope": "openid User.Read",
    }
    outcomes: list[str] = []

    def redeem() -> None:
        try:
            emulator.token(CONTOSO_TENANT_ID, form)
            outcomes.append("ok")
        except EntraError as err:
            outcomes.append(str(err.aadsts))

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["54005"] * 7 + ["ok"]


@settings(max_examples=50, deadline=None)
@given(garbage=st.text(min_size=1, max_size=80))
def test_any_code_the_emulator_did_not_issue_is_invalid_grant(garbage: str) -> None:
    emulator = _SHARED_EMULATOR
    with pytest.raises(EntraError) as excinfo:
        emulator.token(
            CONTOSO_TENANT_ID,
            {
                "grant_type": "authorization_code",
                "client_id": SIGNIN_APP_ID,
                "client_secret": SIGNIN_APP_SECRET,
                "code": garbage,
                "redirect_uri": REDIRECT_URI,
            },
        )
    assert excinfo.value.error == "invalid_grant"


_SHARED_EMULATOR = EmulatorType(
    EmulatorConfig(
        issuer_base_url=ISSUER, tenants=default_config().tenants, apps=default_config().apps
    )
)
