"""Every failure is explained in plain words: on the broker's pages, in results and in events."""

from __future__ import annotations

import re
from html import unescape
from typing import Any

import jwt

from broker import errors
from emulator.seed import CONTOSO_TENANT_ID, FABRIKAM_TENANT_ID
from tests.flow.conftest import (
    BROKER,
    CONTOSO_ADMIN,
    CONTOSO_DECLINER,
    CONTOSO_USER,
    FABRIKAM_ADMIN,
    World,
    returned,
)


def test_redeemed_result_and_events_carry_the_admin_message(world: World) -> None:
    world.register()
    query = returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_USER))
    result = world.redeem(query["resultCode"]).json()
    assert result["errorCode"] == "NOT_GLOBAL_ADMIN"
    assert result["message"] == errors.NotGlobalAdmin.message
    events = world.broker.get("/events", headers=world.headers).json()["items"]
    failed = [e for e in events if e["data"]["actionItemId"] == query["actionItemId"]]
    assert failed and all(e["data"]["message"] == errors.NotGlobalAdmin.message for e in failed)


def test_success_carries_no_message(world: World) -> None:
    query = returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    assert world.redeem(query["resultCode"]).json()["message"] is None


def test_posted_result_jwt_carries_the_admin_message(world: World) -> None:
    link = world.link("REGISTRATION", resultDelivery="form_post")
    launched = world.click(link["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_DECLINER, decision="cancel")
    response = world.callback(params)
    token = unescape(re.search(r'name="result" value="([^"]+)"', response.text).group(1))  # type: ignore[union-attr]
    claims: dict[str, Any] = jwt.decode(
        token, options={"verify_signature": False}, audience=world.provider_id, issuer=BROKER
    )
    assert claims["result"]["errorCode"] == "CONSENT_DECLINED"
    assert claims["result"]["message"] == errors.ConsentDeclined.message


def test_wrong_tenant_login_names_the_tenant_the_admin_signed_in_with(world: World) -> None:
    """The result says which organisation the admin used, beside the enterprise's own tenant."""
    world.register()
    query = returned(world.run("LOGIN_ENTERPRISE_ADMIN", FABRIKAM_ADMIN))
    result = world.redeem(query["resultCode"]).json()
    assert result["errorCode"] == "LOGIN_WRONG_TENANT"
    assert result["signedInTenantId"] == FABRIKAM_TENANT_ID
    assert result["tenantId"] == CONTOSO_TENANT_ID
