"""Admin consent and client_credentials: roles only where consented, after propagation."""

from __future__ import annotations

import jwt
import pytest
from emulator_test_support import (
    REDIRECT_URI,
    FakeClock,
    MakeApp,
    TestClient,
    admin_consent_url,
)

from emulator import GRAPH_DEFAULT_SCOPE, Emulator, complete_browser_flow
from emulator.seed import (
    CONTOSO_ADMIN,
    CONTOSO_DECLINER,
    CONTOSO_TENANT_ID,
    CONTOSO_USER,
    FABRIKAM_TENANT_ID,
    PRESENCE_APP_ID,
    PRESENCE_APP_SECRET,
    SIGNIN_APP_ID,
    USER_SYNC_APP_ID,
    USER_SYNC_APP_SECRET,
)


def _app_token(
    make_app: MakeApp,
    tenant: str,
    client_id: str = USER_SYNC_APP_ID,
    secret: str = USER_SYNC_APP_SECRET,
) -> dict[str, object]:
    # A fresh MSAL application per attempt, as the broker does: MSAL remembers a 400
    # answer for a while per application object.
    result: dict[str, object] = make_app(client_id, secret, tenant).acquire_token_for_client(
        [GRAPH_DEFAULT_SCOPE]
    )
    return result


def _roles(result: dict[str, object]) -> list[str] | None:
    token = result["access_token"]
    assert isinstance(token, str)
    claims = jwt.decode(token, options={"verify_signature": False})
    roles: list[str] | None = claims.get("roles")
    return roles


def test_client_credentials_before_any_consent_is_aadsts700016(make_app: MakeApp) -> None:
    result = _app_token(make_app, CONTOSO_TENANT_ID)
    assert result["error"] == "unauthorized_client"
    assert result["error_codes"] == [700016]


def test_admin_consent_accept_redirects_with_tenant_scope_and_state(client: TestClient) -> None:
    result = complete_browser_flow(
        client,
        admin_consent_url(USER_SYNC_APP_ID, state="abc"),
        username=CONTOSO_ADMIN.preferred_username,
    )
    assert result.redirect_uri == REDIRECT_URI
    assert result.params == {
        "admin_consent": "True",
        "tenant": CONTOSO_TENANT_ID,
        "state": "abc",
        "scope": "https://graph.microsoft.com/User.Read.All",
    }


def test_app_token_after_consent_has_roles_only_in_the_consented_tenant(
    make_app: MakeApp, client: TestClient
) -> None:
    complete_browser_flow(
        client, admin_consent_url(USER_SYNC_APP_ID), username=CONTOSO_ADMIN.preferred_username
    )

    contoso = _app_token(make_app, CONTOSO_TENANT_ID)
    claims = jwt.decode(contoso["access_token"], options={"verify_signature": False})
    assert claims["tid"] == CONTOSO_TENANT_ID
    assert claims["roles"] == ["User.Read.All"]
    assert claims["aud"] == "https://graph.microsoft.com"
    assert claims["appid"] == claims["azp"] == USER_SYNC_APP_ID
    assert contoso["token_type"] == "Bearer"

    assert _app_token(make_app, FABRIKAM_TENANT_ID)["error_codes"] == [700016]
    other_app = _app_token(make_app, CONTOSO_TENANT_ID, PRESENCE_APP_ID, PRESENCE_APP_SECRET)
    assert other_app["error_codes"] == [700016]


def test_each_consent_app_gets_its_own_app_roles(make_app: MakeApp, client: TestClient) -> None:
    complete_browser_flow(
        client,
        admin_consent_url(PRESENCE_APP_ID, tenant=FABRIKAM_TENANT_ID),
        username="admin@fabrikam.onmicrosoft.com",
    )
    result = _app_token(make_app, FABRIKAM_TENANT_ID, PRESENCE_APP_ID, PRESENCE_APP_SECRET)
    assert _roles(result) == ["Presence.Read.All", "Presence.ReadWrite.All"]


def test_consent_propagation_delay_hides_the_service_principal_until_it_elapses(
    make_app: MakeApp, client: TestClient, emulator: Emulator, clock: FakeClock
) -> None:
    emulator.set_consent_propagation_delay(5)
    complete_browser_flow(
        client, admin_consent_url(USER_SYNC_APP_ID), username=CONTOSO_ADMIN.preferred_username
    )
    assert _app_token(make_app, CONTOSO_TENANT_ID)["error_codes"] == [700016]
    clock.advance(4.9)
    assert emulator.consented_roles(CONTOSO_TENANT_ID, USER_SYNC_APP_ID) is None
    clock.advance(0.2)
    assert _roles(_app_token(make_app, CONTOSO_TENANT_ID)) == ["User.Read.All"]


def test_the_token_endpoint_answers_each_request_from_the_current_grants(
    client: TestClient, emulator: Emulator
) -> None:
    """The emulator keeps no memory of a refusal: the request after a grant gets a token."""
    request = {
        "grant_type": "client_credentials",
        "client_id": USER_SYNC_APP_ID,
        "client_secret": USER_SYNC_APP_SECRET,
        "scope": GRAPH_DEFAULT_SCOPE,
    }
    before = client.post(f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/token", data=request)
    assert before.status_code == 400 and before.json()["error_codes"] == [700016]
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    after = client.post(f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/token", data=request)
    assert after.status_code == 200 and "access_token" in after.json()


def test_admin_consent_cancel_carries_error_and_also_admin_consent_true(
    client: TestClient,
) -> None:
    """Like Entra, the cancel redirect still says admin_consent=True: error must win."""
    result = complete_browser_flow(
        client,
        admin_consent_url(USER_SYNC_APP_ID),
        username=CONTOSO_ADMIN.preferred_username,
        decision="cancel",
    )
    assert result.params["error"] == "access_denied"
    assert result.params["error_description"].startswith("AADSTS65004:")
    assert result.params["admin_consent"] == "True"
    assert result.params["tenant"] == CONTOSO_TENANT_ID
    assert result.params["state"] == "st-1"


def test_cancelled_admin_consent_grants_nothing(make_app: MakeApp, client: TestClient) -> None:
    complete_browser_flow(
        client, admin_consent_url(USER_SYNC_APP_ID), username=CONTOSO_DECLINER.preferred_username
    )
    assert _app_token(make_app, CONTOSO_TENANT_ID)["error_codes"] == [700016]


def test_non_admin_cannot_grant_admin_consent(make_app: MakeApp, client: TestClient) -> None:
    result = complete_browser_flow(
        client, admin_consent_url(USER_SYNC_APP_ID), username=CONTOSO_USER.preferred_username
    )
    assert result.params["error"] == "access_denied"
    assert result.params["error_description"].startswith("AADSTS90094:")
    assert _app_token(make_app, CONTOSO_TENANT_ID)["error_codes"] == [700016]


def test_admin_consent_with_unregistered_redirect_uri_shows_error_page(client: TestClient) -> None:
    url = admin_consent_url(USER_SYNC_APP_ID).replace("localhost", "evil.example")
    response = client.get(url, follow_redirects=False)
    assert response.status_code == 400 and "AADSTS50011" in response.text


def test_client_credentials_needs_the_graph_default_scope(
    client: TestClient, emulator: Emulator
) -> None:
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    response = client.post(
        f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": USER_SYNC_APP_ID,
            "client_secret": USER_SYNC_APP_SECRET,
            "scope": "https://graph.microsoft.com/User.Read.All",
        },
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [1002012]


@pytest.mark.parametrize("alias", ["common", "organizations"])
def test_client_credentials_on_a_multi_tenant_alias_is_refused(
    client: TestClient, alias: str
) -> None:
    response = client.post(
        f"/{alias}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": USER_SYNC_APP_ID,
            "client_secret": USER_SYNC_APP_SECRET,
            "scope": GRAPH_DEFAULT_SCOPE,
        },
    )
    assert response.json()["error_codes"] == [50059]


def test_user_sign_in_creates_a_service_principal_without_roles(
    make_app: MakeApp, client: TestClient, emulator: Emulator
) -> None:
    app = make_app()
    flow = app.initiate_auth_code_flow(
        ["User.Read"], redirect_uri=REDIRECT_URI, response_mode="form_post"
    )
    complete_browser_flow(client, flow["auth_uri"], username=CONTOSO_USER.preferred_username)
    assert emulator.consented_roles(CONTOSO_TENANT_ID, SIGNIN_APP_ID) == ()


def test_revoked_consent_stops_app_tokens(make_app: MakeApp, emulator: Emulator) -> None:
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    assert "access_token" in _app_token(make_app, CONTOSO_TENANT_ID)
    emulator.revoke_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    assert _app_token(make_app, CONTOSO_TENANT_ID)["error_codes"] == [700016]
