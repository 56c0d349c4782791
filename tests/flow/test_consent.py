"""Every consent action type end to end, confirmed with an app-only token."""

from __future__ import annotations

import pytest

from broker.credentials import sandbox_app_credentials
from emulator.seed import CONTOSO_TENANT_ID, FABRIKAM_TENANT_ID
from tests.flow.conftest import CONTOSO_ADMIN, CONTOSO_USER, World, returned
from tests.shared_app import serving_app

CONSENTS = [
    ("GET_USER_SYNC_CONSENT", "UserSync"),
    ("GET_PRESENCE_CONSENT", "Presence"),
    ("GET_CALL_APP_CONSENT", "CallApp"),
    ("GET_CONTACTS_CONSENT", "Contacts"),
    ("GET_CDR_CONSENT", "CDR"),
    ("GET_CALL_RECORDING_CONSENT", "CallRecording"),
    ("GET_SERVICE_PROVIDER_CONSENT", "ServiceProviderManagement"),
]


def consent_status(world: World, consent_type: str) -> dict[str, object]:
    body = world.broker.get(f"/enterprises/{world.enterprise_id}", headers=world.headers).json()
    return dict(next(c for c in body["consents"] if c["consentType"] == consent_type))


@pytest.mark.parametrize(("action_type", "consent_type"), CONSENTS)
def test_consent_is_granted_and_confirmed(
    world: World, action_type: str, consent_type: str
) -> None:
    world.register()
    launched = world.click(world.link(action_type)["url"])
    assert launched.status_code == 302
    location = launched.headers["location"]
    assert location.startswith(
        f"https://login.emulator.test/{CONTOSO_TENANT_ID}/v2.0/adminconsent?"
    )
    assert "scope=https%3A%2F%2Fgraph.microsoft.com%2F.default" in location
    query = returned(world.callback(world.at_microsoft(location, CONTOSO_ADMIN)))
    assert query["status"] == "completed"
    result = world.redeem(query["resultCode"]).json()
    assert result["consent"]["status"] == "granted"
    assert set(result["consent"]["requiredRoles"]) <= set(result["consent"]["roles"])
    status = consent_status(world, consent_type)
    assert status["status"] == "granted" and status["grantedAt"]


def test_declined_consent_reports_declined_even_though_admin_consent_is_true(world: World) -> None:
    """Entra's cancel redirect says admin_consent=True too; the error must win."""
    world.register()
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN, decision="cancel")
    assert params["admin_consent"] == "True" and params["error"] == "access_denied"
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "CONSENT_DECLINED")
    assert consent_status(world, "Presence")["status"] == "failed"
    assert consent_status(world, "Presence")["errorCode"] == "CONSENT_DECLINED"


def test_error_wins_even_when_the_grant_exists(world: World) -> None:
    """A forged error-free looking redirect cannot turn a cancel into success, nor vice versa."""
    world.register()
    app = sandbox_app_credentials(world.runtime.catalog)["presence"]
    world.emulator.grant_admin_consent(CONTOSO_TENANT_ID, app.client_id)
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN, decision="cancel")
    query = returned(world.callback(params))
    assert query["errorCode"] == "CONSENT_DECLINED"


def test_consent_by_a_non_admin_fails_with_its_code(world: World) -> None:
    world.register()
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_USER)
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "NOT_GLOBAL_ADMIN")


def test_forged_tenant_parameter_is_never_trusted(world: World) -> None:
    """An attacker who consented in their own tenant cannot claim the victim's consent."""
    world.register()
    app = sandbox_app_credentials(world.runtime.catalog)["presence"]
    world.emulator.grant_admin_consent(FABRIKAM_TENANT_ID, app.client_id)
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    state = dict(p.split("=", 1) for p in launched.headers["location"].split("?", 1)[1].split("&"))[
        "state"
    ]
    from urllib.parse import unquote

    forged = {"admin_consent": "True", "tenant": FABRIKAM_TENANT_ID, "state": unquote(state)}
    query = returned(world.callback(forged))
    assert query["status"] == "pending"  # Contoso never consented: not confirmed
    assert consent_status(world, "Presence")["status"] == "pending"


def test_consent_not_yet_visible_is_reported_pending_after_brief_retries(world: World) -> None:
    world.register()
    world.emulator.set_consent_propagation_delay(3600)
    launched = world.click(world.link("GET_CDR_CONSENT")["url"])
    query = returned(
        world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    )
    assert query["status"] == "pending" and "errorCode" not in query
    assert world.sleeps == [1.0]  # two attempts, one pause between
    assert world.redeem(query["resultCode"]).json()["consent"]["status"] == "pending"
    item = world.broker.get(f"/actionItems/{query['actionItemId']}", headers=world.headers).json()
    assert item["status"] == "pending"


def test_consent_visible_after_a_short_delay_is_confirmed(world: World) -> None:
    world.register()
    world.emulator.set_consent_propagation_delay(0.5)
    launched = world.click(world.link("GET_CDR_CONSENT")["url"])
    query = returned(
        world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    )
    assert query["status"] == "completed"


def test_microsoft_down_during_confirmation_reaches_the_provider(world: World) -> None:
    world.register()
    launched = world.click(world.link("GET_CONTACTS_CONSENT")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.fail_next_token_requests(10, status=500)
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_UNAVAILABLE")


def test_pending_consent_is_confirmed_later_by_the_worker(world: World) -> None:
    from broker.confirmations import confirm_pending

    world.register()
    world.emulator.set_consent_propagation_delay(30)
    launched = world.click(world.link("GET_CDR_CONSENT")["url"])
    query = returned(
        world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    )
    assert query["status"] == "pending"
    assert confirm_pending(world.runtime).granted == 0  # still propagating
    world.clock.advance(seconds=30)
    done = confirm_pending(world.runtime)
    assert (done.checked, done.granted) == (1, 1)
    item = world.broker.get(f"/actionItems/{query['actionItemId']}", headers=world.headers).json()
    assert item["status"] == "completed"
    assert consent_status(world, "CDR")["status"] == "granted"
    assert confirm_pending(world.runtime).checked == 0


def test_consent_still_invisible_after_an_hour_fails(world: World) -> None:
    from broker.confirmations import confirm_pending

    world.register()
    world.emulator.set_consent_propagation_delay(10**6)
    launched = world.click(world.link("GET_CDR_CONSENT")["url"])
    world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    world.clock.advance(hours=2)
    assert confirm_pending(world.runtime).failed == 1
    status = consent_status(world, "CDR")
    assert (status["status"], status["errorCode"]) == ("failed", "CONSENT_NOT_CONFIRMED")


class GrantWithoutRoles:
    """A Microsoft whose app-only token shows the tenant but none of the roles asked for."""

    def __init__(self, real: object, tenant: str | None) -> None:
        self._real = real
        self._tenant = tenant

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def confirm_consent(
        self, spec: object, tenant: str, attempts: int | None = None, log: object = None
    ) -> object:
        from broker.microsoft import ConsentCheck

        return ConsentCheck(visible=True, tenant_id=self._tenant, roles=("User.Read",))


@pytest.mark.parametrize("token_tenant", [CONTOSO_TENANT_ID, FABRIKAM_TENANT_ID])
def test_grant_lacking_roles_or_tenant_is_not_reported_as_success(
    world: World, token_tenant: str
) -> None:
    from dataclasses import replace

    world.register()
    runtime = replace(
        world.runtime, microsoft=GrantWithoutRoles(world.runtime.microsoft, token_tenant)
    )  # type: ignore[arg-type]
    world.broker = serving_app(runtime).test_client(
        base_url="https://broker.test", raise_server_exceptions=False
    )
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    query = returned(
        world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN))
    )
    assert (query["status"], query["errorCode"]) == ("failed", "CONSENT_NOT_CONFIRMED")


def test_unknown_tenant_at_microsoft_is_a_recorded_failure_not_a_500(world: World) -> None:
    """Microsoft refuses discovery for a deleted tenant: the outcome still reaches the provider."""
    from urllib.parse import parse_qs, urlsplit

    world.register("0b0b0b0b-0000-4000-8000-00000000dead")
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    state = parse_qs(urlsplit(launched.headers["location"]).query)["state"][0]
    query = returned(world.callback({"admin_consent": "True", "state": state}))
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_ERROR")


def test_worker_survives_a_tenant_microsoft_refuses(world: World) -> None:
    from broker.confirmations import confirm_pending

    world.register()
    world.emulator.set_consent_propagation_delay(600)
    launched = world.click(world.link("GET_CDR_CONSENT")["url"])
    returned(world.callback(world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)))
    world.emulator.fail_next_token_requests(5, status=500)
    assert confirm_pending(world.runtime).checked == 1  # no exception escapes
    world.clock.advance(seconds=600)
    granted = 0
    for _ in range(6):  # the remaining injected failures are used up, then it goes through
        granted += confirm_pending(world.runtime).granted
    assert granted == 1
