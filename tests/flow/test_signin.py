"""REGISTRATION and LOGIN_ENTERPRISE_ADMIN end to end through the emulator."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from broker.microsoft import Microsoft
from emulator.seed import CONTOSO_TENANT_ID, FABRIKAM_TENANT_ID
from tests.flow.conftest import (
    CONTOSO_ADMIN,
    CONTOSO_DECLINER,
    CONTOSO_USER,
    FABRIKAM_ADMIN,
    LOGIN,
    World,
    returned,
)


def test_registration_binds_the_enterprise_and_returns_an_msal_result(world: World) -> None:
    response = world.run("REGISTRATION", CONTOSO_ADMIN)
    query = returned(response)
    assert query["status"] == "completed"
    assert query["actionType"] == "REGISTRATION"
    assert query["state"] == "portal-state-42"
    assert "errorCode" not in query
    assert query["resultCode"].startswith("ctt_rc_")
    assert "access_token" not in response.headers["location"]
    result = world.redeem(query["resultCode"]).json()
    assert result["status"] == "completed"
    assert result["tenantId"] == CONTOSO_TENANT_ID
    auth = result["authenticationResult"]
    assert auth["accessToken"] and auth["idToken"]
    assert auth["idTokenClaims"]["tid"] == CONTOSO_TENANT_ID
    assert auth["account"]["username"] == CONTOSO_ADMIN
    assert auth["account"]["homeAccountId"].endswith("." + CONTOSO_TENANT_ID)
    assert "refreshToken" not in auth
    enterprise = world.broker.get(
        f"/enterprises/{world.enterprise_id}", headers=world.headers
    ).json()
    assert enterprise["registration"]["status"] == "registered"
    assert enterprise["registration"]["tenantId"] == CONTOSO_TENANT_ID
    item = world.broker.get(f"/actionItems/{query['actionItemId']}", headers=world.headers).json()
    assert item["status"] == "completed" and item["finishedAt"]


def test_registration_by_a_non_admin_fails_with_its_code(world: World) -> None:
    query = returned(world.run("REGISTRATION", CONTOSO_USER))
    assert (query["status"], query["errorCode"]) == ("failed", "NOT_GLOBAL_ADMIN")
    enterprise = world.broker.get(
        f"/enterprises/{world.enterprise_id}", headers=world.headers
    ).json()
    assert enterprise["registration"]["status"] == "notRegistered"
    result = world.redeem(query["resultCode"]).json()
    assert result["errorCode"] == "NOT_GLOBAL_ADMIN" and "authenticationResult" not in result


def test_declined_sign_in_reaches_the_provider(world: World) -> None:
    query = returned(world.run("REGISTRATION", CONTOSO_DECLINER))
    assert (query["status"], query["errorCode"]) == ("failed", "CONSENT_DECLINED")


def test_tenant_already_bound_to_another_enterprise_is_refused(world: World) -> None:
    from broker.enterprises import create_enterprise, record_registration

    other = create_enterprise(world.runtime, world.provider_id, name="Old", external_id="old")
    record_registration(world.runtime, world.provider_id, other.enterprise_id, CONTOSO_TENANT_ID)
    query = returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    assert (query["status"], query["errorCode"]) == ("failed", "TENANT_ALREADY_REGISTERED")


def test_login_returns_fresh_admin_tokens_usable_for_the_teams_catalog(world: World) -> None:
    world.register()
    query = returned(world.run("LOGIN_ENTERPRISE_ADMIN", CONTOSO_ADMIN))
    assert query["status"] == "completed"
    auth = world.redeem(query["resultCode"]).json()["authenticationResult"]
    assert "AppCatalog.ReadWrite.All" in " ".join(auth["scopes"])


def test_login_from_another_tenant_fails_with_its_code(world: World) -> None:
    """A Fabrikam admin must not obtain tokens on behalf of Contoso's enterprise."""
    world.register()
    query = returned(world.run("LOGIN_ENTERPRISE_ADMIN", FABRIKAM_ADMIN))
    assert (query["status"], query["errorCode"]) == ("failed", "LOGIN_WRONG_TENANT")
    assert world.redeem(query["resultCode"]).json()["tenantId"] == CONTOSO_TENANT_ID


def test_login_by_a_non_admin_fails_with_its_code(world: World) -> None:
    world.register()
    query = returned(world.run("LOGIN_ENTERPRISE_ADMIN", CONTOSO_USER))
    assert (query["status"], query["errorCode"]) == ("failed", "NOT_GLOBAL_ADMIN")


def test_refresh_token_is_shared_only_when_the_provider_allows_it(world: World) -> None:
    from sqlalchemy import update

    from broker.db import providers as providers_table

    with world.runtime.engine.begin() as connection:
        connection.execute(update(providers_table).values(share_refresh_token=True))
    query = returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    assert world.redeem(query["resultCode"]).json()["authenticationResult"]["refreshToken"]


def test_microsoft_down_at_code_redemption_reaches_the_provider(world: World) -> None:
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.fail_next_token_requests(5, status=503)
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_UNAVAILABLE")


def test_fabrikam_can_register_its_own_enterprise(world: World) -> None:
    query = returned(world.run("REGISTRATION", FABRIKAM_ADMIN))
    assert world.redeem(query["resultCode"]).json()["tenantId"] == FABRIKAM_TENANT_ID


def test_id_token_for_another_audience_fails_with_its_code(world: World) -> None:
    """A validly signed token minted for another app must not log anyone in here."""
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.override_next_id_token_claims({"aud": "00000000-0000-0000-0000-00000000beef"})
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "ID_TOKEN_INVALID")


def test_id_token_signed_with_an_unpublished_key_fails(world: World) -> None:
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.use_unpublished_signing_key()
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "ID_TOKEN_INVALID")


def test_id_token_of_a_personal_account_is_refused(world: World) -> None:
    from emulator import CONSUMERS_TENANT_ID

    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.override_next_id_token_claims({"tid": CONSUMERS_TENANT_ID})
    query = returned(world.callback(params))
    assert query["errorCode"] == "PERSONAL_ACCOUNT_NOT_ALLOWED"


def test_code_microsoft_no_longer_accepts_reaches_the_provider_as_invalid_grant(
    world: World,
) -> None:
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    params["code"] = "a-code-microsoft-never-issued"
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "INVALID_GRANT")


def test_two_registration_links_cannot_both_bind_the_enterprise(world: World) -> None:
    """Links issued before the first registration completed: the second must not rebind."""
    first = world.link("REGISTRATION")
    second = world.link("REGISTRATION")
    for link, user in ((first, CONTOSO_ADMIN), (second, FABRIKAM_ADMIN)):
        launched = world.click(link["url"])
        query = returned(world.callback(world.at_microsoft(launched.headers["location"], user)))
    assert (query["status"], query["errorCode"]) == ("failed", "ENTERPRISE_ALREADY_REGISTERED")
    enterprise = world.broker.get(f"/enterprises/{world.enterprise_id}", headers=world.headers)
    assert enterprise.json()["registration"]["tenantId"] == CONTOSO_TENANT_ID


def test_reregistration_to_another_tenant_forgets_the_old_consents(world: World) -> None:
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_ADMIN))
    query = returned(world.run("REGISTRATION", FABRIKAM_ADMIN, reregister=True))
    assert query["status"] == "completed"
    body = world.broker.get(f"/enterprises/{world.enterprise_id}", headers=world.headers).json()
    assert body["registration"]["tenantId"] == FABRIKAM_TENANT_ID
    presence = next(c for c in body["consents"] if c["consentType"] == "Presence")
    assert presence["status"] == "notRequested"


def test_microsoft_keys_unreachable_is_microsoft_unavailable_not_a_bad_token(world: World) -> None:
    """Microsoft's signing keys cannot be fetched: an outage the admin may retry, as documented."""
    import httpx

    from broker.id_tokens import JwksCache

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    world.runtime.microsoft.jwks = JwksCache(
        httpx.Client(transport=httpx.MockTransport(down)), clock=world.clock
    )
    query = returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_UNAVAILABLE")


def test_launches_share_one_msal_object_and_every_redemption_builds_its_own(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beginning a sign-in keeps nothing between admins; redeeming a code must start clean."""
    built: list[Any] = []
    original = Microsoft._application

    def counted(self: Microsoft, app: str, tenant: str) -> Any:
        built.append(original(self, app, tenant))
        return built[-1]

    monkeypatch.setattr(Microsoft, "_application", counted)
    world.register()
    locations = []
    for _ in range(2):
        launched = world.click(world.link("LOGIN_ENTERPRISE_ADMIN")["url"])
        assert launched.status_code == 302, launched.text
        locations.append(launched.headers["location"])
    assert len(built) == 1
    first, second = (parse_qs(urlsplit(url).query) for url in locations)
    assert first["nonce"] != second["nonce"]
    assert first["code_challenge"] != second["code_challenge"]
    for location in locations:
        query = returned(world.callback(world.at_microsoft(location, CONTOSO_ADMIN)))
        assert query["status"] == "completed"
    assert len(built) == 3
    assert len({id(application) for application in built}) == 3


def test_a_failed_discovery_is_asked_again_not_kept_for_later_launches(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 on the discovery document is retried; only a working MSAL object is kept."""
    paths: list[str] = []
    builds: list[str] = []
    original = Microsoft._application

    def counted(self: Microsoft, app: str, tenant: str) -> Any:
        builds.append(tenant)
        return original(self, app, tenant)

    monkeypatch.setattr(Microsoft, "_application", counted)

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if len(paths) == 1:
            return httpx.Response(503)
        base = f"{LOGIN}/organizations"
        return httpx.Response(
            200,
            json={
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "issuer": f"{LOGIN}/{{tenantid}}/v2.0",
            },
        )

    runtime = world.runtime
    microsoft = Microsoft(
        runtime.settings,
        runtime.credentials,
        httpx.Client(transport=httpx.MockTransport(answer)),
        world.clock,
        sleep=lambda seconds: None,
    )
    spec = runtime.catalog.get("LOGIN_ENTERPRISE_ADMIN")
    urls = [microsoft.start_sign_in(spec, "organizations", f"state-{n}")[0] for n in range(3)]
    assert paths == ["/organizations/v2.0/.well-known/openid-configuration"] * 2
    assert builds == ["organizations"] * 2  # the failed build, then the one kept for all three
    assert len({parse_qs(urlsplit(url).query)["nonce"][0] for url in urls}) == 3
