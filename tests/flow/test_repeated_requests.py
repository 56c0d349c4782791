"""A repeated request that fails never undoes what an earlier one achieved.

The rule (broker/lifecycle.py ``as_it_stands``, the spec's "Repeated requests"):
the action item fails with its code, while the result, its events and
``GET /enterprises/{id}`` all report the consent and the tenant as they stand.
"""

from __future__ import annotations

from typing import Any

from broker.credentials import sandbox_app_credentials
from emulator.seed import CONTOSO_TENANT_ID, FABRIKAM_TENANT_ID
from tests.flow.conftest import (
    CONTOSO_ADMIN,
    CONTOSO_DECLINER,
    CONTOSO_USER,
    FABRIKAM_ADMIN,
    World,
    returned,
)


def enterprise(world: World) -> dict[str, Any]:
    response = world.broker.get(f"/enterprises/{world.enterprise_id}", headers=world.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def consent(world: World, consent_type: str) -> dict[str, Any]:
    return dict(next(c for c in enterprise(world)["consents"] if c["consentType"] == consent_type))


def events_of(world: World, action_item_id: str) -> list[dict[str, Any]]:
    response = world.broker.get("/events", params={"limit": 100}, headers=world.headers)
    assert response.status_code == 200, response.text
    return [
        event
        for event in response.json()["items"]
        if event["data"].get("actionItemId") == action_item_id
    ]


def test_declined_reconsent_keeps_the_grant_and_says_so_everywhere(world: World) -> None:
    """Grant CDR, then decline a second request: failed item, granted consent, no consent.failed."""
    world.register()
    assert returned(world.run("GET_CDR_CONSENT", CONTOSO_ADMIN))["status"] == "completed"
    before = consent(world, "CDR")
    assert before["status"] == "granted"

    query = returned(world.run("GET_CDR_CONSENT", CONTOSO_DECLINER, decision="cancel"))
    assert (query["status"], query["errorCode"]) == ("failed", "CONSENT_DECLINED")
    result = world.redeem(query["resultCode"]).json()
    assert (result["status"], result["errorCode"]) == ("failed", "CONSENT_DECLINED")
    assert result["consent"]["status"] == "granted"
    assert set(result["consent"]["requiredRoles"]) <= set(result["consent"]["roles"])

    types = [event["type"] for event in events_of(world, query["actionItemId"])]
    assert types == ["actionItem.failed"]
    failed_event = events_of(world, query["actionItemId"])[0]
    assert failed_event["data"]["consent"]["status"] == "granted"

    after = consent(world, "CDR")
    assert after["status"] == "granted"
    assert after["grantedAt"] == before["grantedAt"] and after["errorCode"] is None
    item = world.broker.get(f"/actionItems/{query['actionItemId']}", headers=world.headers)
    assert (item.json()["status"], item.json()["errorCode"]) == ("failed", "CONSENT_DECLINED")


def test_reconsent_by_a_non_admin_keeps_the_grant(world: World) -> None:
    """Any failure code, not only a decline, leaves a granted consent granted."""
    world.register()
    returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_ADMIN))
    query = returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_USER))
    assert query["errorCode"] == "NOT_GLOBAL_ADMIN"
    assert world.redeem(query["resultCode"]).json()["consent"]["status"] == "granted"
    assert consent(world, "Presence")["status"] == "granted"


def test_first_consent_that_fails_is_still_reported_failed(world: World) -> None:
    """The rule keeps grants only: a consent never granted fails as before, with its event."""
    world.register()
    query = returned(world.run("GET_CDR_CONSENT", CONTOSO_DECLINER, decision="cancel"))
    result = world.redeem(query["resultCode"]).json()
    assert result["consent"]["status"] == "failed"
    types = [event["type"] for event in events_of(world, query["actionItemId"])]
    assert types == ["actionItem.failed", "consent.failed"]
    assert consent(world, "CDR")["status"] == "failed"


def test_unconfirmed_reconsent_that_gives_up_keeps_the_grant(world: World) -> None:
    """A pending repeat that the worker gives up on does not turn a grant into a failure."""
    from broker.confirmations import PENDING_LIMIT, confirm_pending

    world.register()
    returned(world.run("GET_CDR_CONSENT", CONTOSO_ADMIN))
    app = sandbox_app_credentials(world.runtime.catalog)[
        world.runtime.catalog.get("GET_CDR_CONSENT").app
    ]
    world.emulator.revoke_consent(CONTOSO_TENANT_ID, app.client_id)  # the repeat cannot be seen
    world.emulator.set_consent_propagation_delay(10**6)
    query = returned(world.run("GET_CDR_CONSENT", CONTOSO_ADMIN))
    assert query["status"] == "pending"
    assert world.redeem(query["resultCode"]).json()["consent"]["status"] == "granted"
    assert consent(world, "CDR")["status"] == "granted"
    world.clock.advance(seconds=PENDING_LIMIT.total_seconds() + 1)
    assert confirm_pending(world.runtime).failed == 1
    item = world.broker.get(f"/actionItems/{query['actionItemId']}", headers=world.headers)
    assert (item.json()["status"], item.json()["errorCode"]) == ("failed", "CONSENT_NOT_CONFIRMED")
    assert consent(world, "CDR")["status"] == "granted"
    types = [event["type"] for event in events_of(world, query["actionItemId"])]
    assert "consent.failed" not in types and "consent.pending" not in types


def test_failed_reregistration_keeps_the_tenant_and_reports_it(world: World) -> None:
    """A declined re-registration: the item fails, the enterprise stays on its tenant."""
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    query = returned(world.run("REGISTRATION", CONTOSO_DECLINER, reregister=True))
    assert (query["status"], query["errorCode"]) == ("failed", "CONSENT_DECLINED")
    result = world.redeem(query["resultCode"]).json()
    assert result["tenantId"] == CONTOSO_TENANT_ID
    types = [event["type"] for event in events_of(world, query["actionItemId"])]
    assert types == ["actionItem.failed"]
    assert enterprise(world)["registration"]["tenantId"] == CONTOSO_TENANT_ID


def test_reregistration_to_a_taken_tenant_reports_the_tenant_kept(world: World) -> None:
    """Losing the tenant race names the enterprise's own tenant, not the one it could not take."""
    from broker.enterprises import create_enterprise, record_registration

    other = create_enterprise(world.runtime, world.provider_id, name="Fab", external_id="fab")
    record_registration(world.runtime, world.provider_id, other.enterprise_id, FABRIKAM_TENANT_ID)
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    query = returned(world.run("REGISTRATION", FABRIKAM_ADMIN, reregister=True))
    assert (query["status"], query["errorCode"]) == ("failed", "TENANT_ALREADY_REGISTERED")
    result = world.redeem(query["resultCode"]).json()
    assert result["tenantId"] == CONTOSO_TENANT_ID
    assert enterprise(world)["registration"]["tenantId"] == CONTOSO_TENANT_ID
    assert [e["type"] for e in events_of(world, query["actionItemId"])] == ["actionItem.failed"]


def test_failed_relogin_leaves_the_registration_as_it_was(world: World) -> None:
    """A login from another tenant fails; the enterprise and its consents are untouched."""
    world.register()
    returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_ADMIN))
    query = returned(world.run("LOGIN_ENTERPRISE_ADMIN", FABRIKAM_ADMIN))
    assert (query["status"], query["errorCode"]) == ("failed", "LOGIN_WRONG_TENANT")
    result = world.redeem(query["resultCode"]).json()
    assert result["tenantId"] == CONTOSO_TENANT_ID and "authenticationResult" not in result
    assert [e["type"] for e in events_of(world, query["actionItemId"])] == ["actionItem.failed"]
    body = enterprise(world)
    assert body["registration"]["tenantId"] == CONTOSO_TENANT_ID
    assert consent(world, "Presence")["status"] == "granted"
