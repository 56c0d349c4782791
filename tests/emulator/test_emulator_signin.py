"""The OIDC authorization code flow, driven by real MSAL and HTTP form posts."""

from __future__ import annotations

import base64
import hashlib
import re
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import msal
import pytest
from emulator_test_support import ISSUER, REDIRECT_URI, FakeClock, MakeApp, TestClient

from emulator import (
    CONSUMERS_TENANT_ID,
    GLOBAL_ADMIN_ROLE_ID,
    AppRegistration,
    Emulator,
    complete_browser_flow,
    create_emulator_app,
    default_apps,
    default_config,
)
from emulator.driver import BrowserFlowError
from emulator.seed import (
    CONTOSO_ADMIN,
    CONTOSO_DECLINER,
    CONTOSO_TENANT_ID,
    CONTOSO_USER,
    PERSONAL_USER,
    SIGNIN_APP_ID,
    SIGNIN_APP_SECRET,
)

SCOPES = ["User.Read", "AppCatalog.ReadWrite.All"]

# MSAL 1.39 nudges towards response_mode=form_post; both modes are tested here.
pytestmark = pytest.mark.filterwarnings("ignore:response_mode=:UserWarning")


def _nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _sign_in(make_app: MakeApp, client: TestClient, username: str, **flow_kwargs: object) -> tuple:
    app = make_app()
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, **flow_kwargs)
    result = complete_browser_flow(client, flow["auth_uri"], username=username)
    return app, flow, result


def test_msal_auth_code_flow_succeeds_with_tenant_user_admin_and_nonce_claims(
    make_app: MakeApp, client: TestClient
) -> None:
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    assert result.delivery == "query"
    assert set(result.params) == {"code", "state", "session_state"}

    tokens = app.acquire_token_by_auth_code_flow(flow, result.params)

    assert "error" not in tokens, tokens
    claims = tokens["id_token_claims"]
    assert claims["tid"] == CONTOSO_TENANT_ID
    assert claims["oid"] == CONTOSO_ADMIN.oid
    assert claims["wids"] == [GLOBAL_ADMIN_ROLE_ID]
    assert claims["nonce"] == _nonce_hash(flow["nonce"])
    assert claims["aud"] == SIGNIN_APP_ID
    assert claims["iss"] == f"{ISSUER}/{CONTOSO_TENANT_ID}/v2.0"
    assert claims["ver"] == "2.0"
    assert {"access_token", "refresh_token", "id_token", "client_info"} <= set(tokens)
    account = app.get_accounts()[0]
    assert account["home_account_id"] == f"{CONTOSO_ADMIN.oid}.{CONTOSO_TENANT_ID}"


def test_non_admin_id_token_carries_no_wids(make_app: MakeApp, client: TestClient) -> None:
    app, flow, result = _sign_in(make_app, client, CONTOSO_USER.preferred_username)
    claims = app.acquire_token_by_auth_code_flow(flow, result.params)["id_token_claims"]
    assert claims["oid"] == CONTOSO_USER.oid
    assert "wids" not in claims


def test_id_token_verifies_with_pyjwt_against_the_published_jwks(
    make_app: MakeApp, client: TestClient
) -> None:
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    id_token = app.acquire_token_by_auth_code_flow(flow, result.params)["id_token"]
    jwks = jwt.PyJWKSet.from_dict(client.get(f"/{CONTOSO_TENANT_ID}/discovery/v2.0/keys").json())
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    claims = jwt.decode(
        id_token,
        key,
        algorithms=["RS256"],
        audience=SIGNIN_APP_ID,
        issuer=f"{ISSUER}/{CONTOSO_TENANT_ID}/v2.0",
    )
    assert claims["exp"] - claims["iat"] == 3600


def test_cancel_on_consent_page_returns_access_denied_65004_with_state(
    make_app: MakeApp, client: TestClient
) -> None:
    app = make_app()
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI)
    result = complete_browser_flow(
        client, flow["auth_uri"], username=CONTOSO_ADMIN.preferred_username, decision="cancel"
    )
    assert result.params["error"] == "access_denied"
    assert result.params["error_description"].startswith("AADSTS65004:")
    assert result.params["state"] == flow["state"]
    assert "code" not in result.params
    assert app.acquire_token_by_auth_code_flow(flow, result.params)["error"] == "access_denied"


def test_user_who_always_declines_gets_access_denied(make_app: MakeApp, client: TestClient) -> None:
    _, _, result = _sign_in(make_app, client, CONTOSO_DECLINER.preferred_username)
    assert result.params["error"] == "access_denied"
    assert result.params["error_description"].startswith("AADSTS65004:")


def test_replayed_authorization_code_is_refused_with_aadsts54005(
    make_app: MakeApp, client: TestClient
) -> None:
    """An attacker who captured a code after the app redeemed it gets nothing."""
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, result.params)
    second = make_app().acquire_token_by_auth_code_flow(flow, result.params)
    assert second["error"] == "invalid_grant"
    assert second["error_codes"] == [54005]


def test_code_redeemed_with_the_wrong_pkce_verifier_is_refused(
    make_app: MakeApp, client: TestClient
) -> None:
    """An intercepted code is useless without the verifier that produced the challenge."""
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    tampered = dict(flow, code_verifier="x" * 43)
    tokens = app.acquire_token_by_auth_code_flow(tampered, result.params)
    assert tokens["error"] == "invalid_grant"
    assert tokens["error_codes"] == [501481]


def test_code_redeemed_with_a_different_redirect_uri_is_refused(
    make_app: MakeApp, client: TestClient
) -> None:
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    tampered = dict(flow, redirect_uri="https://broker.example.test/callback")
    tokens = app.acquire_token_by_auth_code_flow(tampered, result.params)
    assert tokens["error"] == "invalid_grant"
    assert tokens["error_codes"] == [70000]


def test_expired_code_is_refused_with_aadsts70008(
    make_app: MakeApp, client: TestClient, clock: FakeClock
) -> None:
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    clock.advance(601)
    assert app.acquire_token_by_auth_code_flow(flow, result.params)["error_codes"] == [70008]


def test_wrong_client_secret_is_invalid_client_401_aadsts7000215(
    make_app: MakeApp, client: TestClient
) -> None:
    _, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    form = {
        "grant_type": "authorization_code",
        "client_id": SIGNIN_APP_ID,
        "client_secret": "wrong",
        "code": result.params["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": flow["code_verifier"],
    }
    response = client.post(f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/token", data=form)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215:")
    assert body["error_codes"] == [7000215]
    assert {"timestamp", "trace_id", "correlation_id"} <= set(body)
    assert response.headers["cache-control"] == "no-store"


def test_msal_with_a_wrong_secret_gets_invalid_client(
    make_app: MakeApp, client: TestClient
) -> None:
    _, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    tokens = make_app(secret="wrong").acquire_token_by_auth_code_flow(flow, result.params)
    assert tokens["error"] == "invalid_client"


def test_client_secret_in_http_basic_is_accepted(make_app: MakeApp, client: TestClient) -> None:
    _, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    basic = base64.b64encode(f"{SIGNIN_APP_ID}:{SIGNIN_APP_SECRET}".encode()).decode()
    response = client.post(
        f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/token",
        data={
            "grant_type": "authorization_code",
            "code": result.params["code"],
            "redirect_uri": REDIRECT_URI,
            "code_verifier": flow["code_verifier"],
            "scope": "openid User.Read",
        },
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


def test_unregistered_redirect_uri_shows_an_error_page_and_never_redirects(
    client: TestClient,
) -> None:
    """An attacker cannot make the emulator send a code or error to their own URL."""
    query = urlencode(
        {
            "client_id": SIGNIN_APP_ID,
            "response_type": "code",
            "redirect_uri": "https://evil.example/<script>",
            "scope": "openid",
            "state": "s",
        }
    )
    response = client.get(f"/organizations/oauth2/v2.0/authorize?{query}", follow_redirects=False)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "AADSTS50011" in response.text
    assert "<script>" not in response.text and "&lt;script&gt;" in response.text


def test_unknown_client_shows_an_error_page_with_aadsts700016(client: TestClient) -> None:
    query = urlencode(
        {
            "client_id": "00000000-1111-2222-3333-444444444444",
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
        }
    )
    with pytest.raises(BrowserFlowError) as excinfo:
        complete_browser_flow(client, f"/common/oauth2/v2.0/authorize?{query}", username="x")
    assert excinfo.value.aadsts == "700016"


def test_form_post_mode_returns_an_autosubmitting_form_msal_accepts(
    make_app: MakeApp, client: TestClient
) -> None:
    app = make_app()
    flow = app.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT_URI, response_mode="form_post")
    result = complete_browser_flow(
        client, flow["auth_uri"], username=CONTOSO_ADMIN.preferred_username
    )
    assert result.delivery == "form_post"
    assert result.redirect_uri == REDIRECT_URI
    tokens = app.acquire_token_by_auth_code_flow(flow, result.params)
    assert tokens["id_token_claims"]["oid"] == CONTOSO_ADMIN.oid


def test_login_hint_skips_the_account_picker(make_app: MakeApp, client: TestClient) -> None:
    app = make_app()
    flow = app.initiate_auth_code_flow(
        SCOPES, redirect_uri=REDIRECT_URI, login_hint=CONTOSO_USER.preferred_username
    )
    first = client.get(flow["auth_uri"], follow_redirects=False)
    assert "Permissions requested" in first.text and "/emulator-ui/select" not in first.text
    result = complete_browser_flow(client, flow["auth_uri"])  # no username needed
    assert (
        app.acquire_token_by_auth_code_flow(flow, result.params)["id_token_claims"]["oid"]
        == CONTOSO_USER.oid
    )


def test_picker_posts_are_plain_forms_with_txn_and_username(client: TestClient) -> None:
    query = urlencode(
        {
            "client_id": SIGNIN_APP_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid User.Read",
            "state": "s1",
        }
    )
    page = client.get(f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/authorize?{query}").text
    txn = re.search(r'name="txn" value="([^"]+)"', page)
    assert txn is not None
    consent = client.post(
        "/emulator-ui/select",
        data={"txn": txn.group(1), "username": CONTOSO_ADMIN.preferred_username},
    )
    assert 'name="decision" value="accept"' in consent.text
    done = client.post(
        "/emulator-ui/consent",
        data={"txn": txn.group(1), "decision": "accept"},
        follow_redirects=False,
    )
    assert done.status_code == 302
    params = parse_qs(urlsplit(done.headers["location"]).query)
    assert params["state"] == ["s1"] and params["code"]
    replay = client.post(
        "/emulator-ui/consent",
        data={"txn": txn.group(1), "decision": "accept"},
        follow_redirects=False,
    )
    assert replay.status_code == 400  # a finished page cannot be submitted again


def test_personal_accounts_are_offered_only_when_the_app_allows_them(client: TestClient) -> None:
    query = urlencode(
        {
            "client_id": SIGNIN_APP_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
        }
    )
    page = client.get(f"/common/oauth2/v2.0/authorize?{query}").text
    assert CONTOSO_ADMIN.preferred_username in page
    assert PERSONAL_USER.preferred_username not in page

    msa_app = AppRegistration(
        client_id="a9a9a9a9-0000-4000-8000-000000000009",
        client_secret="s",
        display_name="MSA app",
        redirect_uris=(REDIRECT_URI,),
        allow_personal_accounts=True,
    )
    emulator = Emulator(default_config(ISSUER, apps=(*default_apps(), msa_app)))
    other = TestClient(create_emulator_app(emulator), base_url=ISSUER)
    query = query.replace(SIGNIN_APP_ID, msa_app.client_id)
    assert (
        PERSONAL_USER.preferred_username in other.get(f"/common/oauth2/v2.0/authorize?{query}").text
    )


def test_unknown_delegated_scope_is_redirected_back_as_an_error(client: TestClient) -> None:
    query = urlencode(
        {
            "client_id": SIGNIN_APP_ID,
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid Mail.Send",
            "state": "s",
        }
    )
    response = client.get(f"/common/oauth2/v2.0/authorize?{query}", follow_redirects=False)
    assert response.status_code == 302
    params = parse_qs(urlsplit(response.headers["location"]).query)
    assert params["error_description"][0].startswith("AADSTS650053:")
    assert params["state"] == ["s"]


def test_refresh_token_grant_returns_new_tokens(make_app: MakeApp, client: TestClient) -> None:
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    first = app.acquire_token_by_auth_code_flow(flow, result.params)
    refreshed = app.acquire_token_by_refresh_token(first["refresh_token"], scopes=["User.Read"])
    assert "access_token" in refreshed, refreshed
    assert refreshed["id_token_claims"]["oid"] == CONTOSO_ADMIN.oid
    assert refreshed["refresh_token"] != first["refresh_token"]
    stranger = make_app(
        client_id="a2a2a2a2-0000-4000-8000-000000000002", secret="emulator-usersync-secret"
    )
    stolen = stranger.acquire_token_by_refresh_token(first["refresh_token"], scopes=["User.Read"])
    assert stolen["error"] == "invalid_grant"


def test_delegated_access_token_is_for_graph_with_scp(
    make_app: MakeApp, client: TestClient
) -> None:
    app, flow, result = _sign_in(make_app, client, CONTOSO_ADMIN.preferred_username)
    access = app.acquire_token_by_auth_code_flow(flow, result.params)["access_token"]
    claims = jwt.decode(access, options={"verify_signature": False})
    assert claims["aud"] == "https://graph.microsoft.com"
    assert set(claims["scp"].split()) == {"User.Read", "AppCatalog.ReadWrite.All"}
    assert claims["tid"] == CONTOSO_TENANT_ID and claims["appid"] == SIGNIN_APP_ID


def test_personal_account_sign_in_carries_the_consumers_tenant_id() -> None:
    """The broker must be able to spot (and refuse) a personal Microsoft account."""
    msa_app = AppRegistration(
        client_id="a9a9a9a9-0000-4000-8000-000000000009",
        client_secret="s",
        display_name="MSA app",
        redirect_uris=(REDIRECT_URI,),
        delegated_scopes=("User.Read",),
        allow_personal_accounts=True,
    )
    emulator = Emulator(default_config(ISSUER, apps=(msa_app,)))
    client = TestClient(create_emulator_app(emulator), base_url=ISSUER)
    app = msal.ConfidentialClientApplication(
        msa_app.client_id,
        client_credential="s",
        authority=f"{ISSUER}/common",
        http_client=client,
        instance_discovery=False,
        validate_authority=False,
    )
    flow = app.initiate_auth_code_flow(["User.Read"], redirect_uri=REDIRECT_URI)
    result = complete_browser_flow(
        client, flow["auth_uri"], username=PERSONAL_USER.preferred_username
    )
    claims = app.acquire_token_by_auth_code_flow(flow, result.params)["id_token_claims"]
    assert claims["tid"] == CONSUMERS_TENANT_ID
    assert claims["iss"] == f"{ISSUER}/{CONSUMERS_TENANT_ID}/v2.0"
