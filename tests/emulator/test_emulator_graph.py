"""Microsoft Graph's Teams app catalog in the emulator: the three calls, token checks, faults."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from emulator_test_support import REDIRECT_URI, FakeClock, MakeApp, TestClient

from emulator import Emulator, complete_browser_flow
from emulator.seed import (
    CONTOSO_ADMIN,
    CONTOSO_TEAMS_ADMIN,
    CONTOSO_TENANT_ID,
    CONTOSO_USER,
    FABRIKAM_ADMIN,
    FABRIKAM_TENANT_ID,
    USER_SYNC_APP_ID,
    USER_SYNC_APP_SECRET,
)
from sandbox.teams_demo import DEMO_APP_ID, demo_package

pytestmark = pytest.mark.filterwarnings("ignore:response_mode=:UserWarning")
APPS = "/v1.0/appCatalogs/teamsApps"
ZIP = "application/zip"


def delegated_token(
    make_app: MakeApp,
    client: TestClient,
    username: str,
    scopes: tuple[str, ...] = ("AppCatalog.ReadWrite.All",),
    tenant: str = CONTOSO_TENANT_ID,
) -> str:
    app = make_app(tenant=tenant)
    flow = app.initiate_auth_code_flow(list(scopes), redirect_uri=REDIRECT_URI)
    result = complete_browser_flow(client, flow["auth_uri"], username=username)
    return str(app.acquire_token_by_auth_code_flow(flow, result.params)["access_token"])


def headers(token: str, content_type: str | None = None) -> dict[str, str]:
    shaped = {"Authorization": f"Bearer {token}"}
    if content_type:
        shaped["Content-Type"] = content_type
    return shaped


def find(client: TestClient, token: str, external_id: str = DEMO_APP_ID) -> Any:
    return client.get(
        APPS,
        params={"$filter": f"externalId eq '{external_id}'", "$expand": "appDefinitions"},
        headers=headers(token),
    )


def graph_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and error["innerError"]["request-id"]
    return dict(error)


@pytest.fixture
def admin_token(make_app: MakeApp, client: TestClient) -> str:
    return delegated_token(make_app, client, CONTOSO_ADMIN.preferred_username)


def test_publish_then_find_by_external_id_with_definitions(
    client: TestClient, admin_token: str
) -> None:
    assert find(client, admin_token).json()["value"] == []
    published = client.post(APPS, content=demo_package("1.0.0"), headers=headers(admin_token, ZIP))
    assert published.status_code == 201, published.text
    app = published.json()
    assert app["externalId"] == DEMO_APP_ID and app["distributionMethod"] == "organization"
    found = find(client, admin_token).json()
    assert found["@odata.context"].endswith("teamsApps(appDefinitions())")
    [listed] = found["value"]
    assert listed["id"] == app["id"]
    assert [(d["version"], d["publishingState"]) for d in listed["appDefinitions"]] == [
        ("1.0.0", "published")
    ]


def test_update_needs_a_higher_version(client: TestClient, admin_token: str) -> None:
    app = client.post(APPS, content=demo_package("1.0.0"), headers=headers(admin_token, ZIP)).json()
    path = f"{APPS}/{app['id']}/appDefinitions"
    same = client.post(path, content=demo_package("1.0.0"), headers=headers(admin_token, ZIP))
    graph_error(same, 409, "Conflict")
    newer = client.post(path, content=demo_package("1.1.0"), headers=headers(admin_token, ZIP))
    assert newer.status_code == 201 and newer.json()["version"] == "1.1.0"
    [listed] = find(client, admin_token).json()["value"]
    assert [d["version"] for d in listed["appDefinitions"]] == ["1.1.0"]


def test_publishing_the_same_app_twice_is_a_conflict(client: TestClient, admin_token: str) -> None:
    client.post(APPS, content=demo_package("1.0.0"), headers=headers(admin_token, ZIP))
    again = client.post(APPS, content=demo_package("2.0.0"), headers=headers(admin_token, ZIP))
    graph_error(again, 409, "Conflict")


def test_catalogs_are_per_tenant(make_app: MakeApp, client: TestClient, admin_token: str) -> None:
    client.post(APPS, content=demo_package(), headers=headers(admin_token, ZIP))
    fabrikam = delegated_token(
        make_app, client, FABRIKAM_ADMIN.preferred_username, tenant=FABRIKAM_TENANT_ID
    )
    assert find(client, fabrikam).json()["value"] == []


def test_a_teams_administrator_may_publish_and_update(
    make_app: MakeApp, client: TestClient
) -> None:
    token = delegated_token(make_app, client, CONTOSO_TEAMS_ADMIN.preferred_username)
    assert "wids" in jwt.decode(token, options={"verify_signature": False})
    published = client.post(APPS, content=demo_package(), headers=headers(token, ZIP))
    assert published.status_code == 201


def test_a_user_without_an_admin_role_is_forbidden_to_publish(
    make_app: MakeApp, client: TestClient
) -> None:
    token = delegated_token(make_app, client, CONTOSO_USER.preferred_username)
    refused = client.post(APPS, content=demo_package(), headers=headers(token, ZIP))
    assert "Teams Service admins" in graph_error(refused, 403, "Forbidden")["message"]
    # Reading the catalog needs no role.
    assert find(client, token).status_code == 200


def test_a_token_without_app_catalog_scope_is_forbidden(
    make_app: MakeApp, client: TestClient
) -> None:
    token = delegated_token(
        make_app, client, CONTOSO_ADMIN.preferred_username, scopes=("User.Read",)
    )
    graph_error(find(client, token), 403, "Forbidden")


def test_an_app_only_token_is_refused(client: TestClient, emulator: Emulator) -> None:
    """Graph's catalog calls refuse application permissions: only a signed-in admin may publish."""
    emulator.grant_admin_consent(CONTOSO_TENANT_ID, USER_SYNC_APP_ID)
    token = client.post(
        f"/{CONTOSO_TENANT_ID}/oauth2/v2.0/token",
        data={
            "grant_type": "client_credentials",
            "client_id": USER_SYNC_APP_ID,
            "client_secret": USER_SYNC_APP_SECRET,
            "scope": "https://graph.microsoft.com/.default",
        },
    ).json()["access_token"]
    graph_error(
        client.post(APPS, content=demo_package(), headers=headers(token, ZIP)), 403, "Forbidden"
    )


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not.a.jwt", "Basic abc"],
)
def test_missing_or_garbled_tokens_are_unauthorized(
    client: TestClient, authorization: str | None
) -> None:
    shaped = {"Authorization": authorization} if authorization else {}
    graph_error(client.get(APPS, headers=shaped), 401, "InvalidAuthenticationToken")


def test_a_token_signed_by_someone_else_is_refused(client: TestClient, admin_token: str) -> None:
    """A forged token with the right claims but another key never reaches the catalog."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    claims = jwt.decode(admin_token, options={"verify_signature": False})
    header = jwt.get_unverified_header(admin_token)
    forged = jwt.encode(
        claims,
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        algorithm="RS256",
        headers={"kid": header["kid"]},
    )
    graph_error(find(client, forged), 401, "InvalidAuthenticationToken")


def test_an_expired_token_is_refused(
    client: TestClient, admin_token: str, clock: FakeClock
) -> None:
    """A token captured from a log an hour later is worthless to the catalog."""
    assert find(client, admin_token).status_code == 200
    clock.advance(3601)
    graph_error(find(client, admin_token), 401, "InvalidAuthenticationToken")


def test_bad_packages_are_refused_like_graph_does(client: TestClient, admin_token: str) -> None:
    graph_error(
        client.post(APPS, content=b"not a zip", headers=headers(admin_token, ZIP)),
        400,
        "BadRequest",
    )
    graph_error(
        client.post(APPS, content=demo_package(), headers=headers(admin_token, "application/json")),
        415,
        "UnsupportedMediaType",
    )


def test_an_unsupported_filter_is_a_bad_request(client: TestClient, admin_token: str) -> None:
    response = client.get(
        APPS, params={"$filter": "startswith(displayName,'a')"}, headers=headers(admin_token)
    )
    graph_error(response, 400, "BadRequest")


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (403, "Forbidden"),
        (409, "Conflict"),
        (500, "InternalServerError"),
        (503, "ServiceUnavailable"),
    ],
)
def test_injected_faults_answer_in_graphs_shape(
    client: TestClient, emulator: Emulator, admin_token: str, status: int, code: str
) -> None:
    emulator.graph.fail_next(1, status)
    graph_error(find(client, admin_token), status, code)
    assert find(client, admin_token).status_code == 200


def test_throttling_carries_retry_after(
    client: TestClient, emulator: Emulator, admin_token: str
) -> None:
    emulator.graph.fail_next(2, 429, retry_after=7)
    for _ in range(2):
        response = find(client, admin_token)
        graph_error(response, 429, "TooManyRequests")
        assert response.headers["retry-after"] == "7"
    assert find(client, admin_token).status_code == 200


def test_faults_and_delay_through_the_control_routes(
    client: TestClient, emulator: Emulator, admin_token: str
) -> None:
    assert client.post(
        "/_emulator/graph-failures", json={"count": 1, "status": 429, "retryAfter": 3}
    ).json()["ok"]
    assert find(client, admin_token).headers["retry-after"] == "3"
    assert client.post("/_emulator/graph-delay", json={"seconds": 0.01}).json()["ok"]
    assert emulator.graph.delay_seconds == 0.01
    assert (
        client.post("/_emulator/graph-failures", json={"count": 1, "status": 418}).status_code
        == 400
    )
    client.post("/_emulator/reset", json={})
    assert emulator.graph.delay_seconds == 0.0
