"""Transient Microsoft failures are retried, and the attempts are visible to the provider."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from broker.db import audit_log
from broker.microsoft import RETRY_DELAYS, RetryingJwksClient
from tests.flow.conftest import CONTOSO_ADMIN, World, returned


def outcome_audit(world: World, item_id: str) -> dict[str, object]:
    with world.runtime.engine.connect() as connection:
        details = connection.execute(
            select(audit_log.c.details).where(
                audit_log.c.action_item_id == item_id,
                audit_log.c.action.in_(("actionItem.completed", "actionItem.failed")),
            )
        ).scalar_one()
    document: dict[str, object] = json.loads(details)
    return document


def outcome_event(world: World, item_id: str) -> dict[str, object]:
    items = world.broker.get("/events", headers=world.headers).json()["items"]
    data: dict[str, object] = next(
        e["data"]
        for e in items
        if e["type"].startswith("actionItem.") and e["data"]["actionItemId"] == item_id
    )
    return data


def test_single_503_at_code_redemption_is_retried_and_the_sign_in_completes(
    world: World,
) -> None:
    """Microsoft hiccups once while redeeming the code: the admin does not need a new link."""
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.fail_next_token_requests(1, status=503)
    query = returned(world.callback(params))
    assert query["status"] == "completed"
    assert world.sleeps == [RETRY_DELAYS[0]]
    result = world.redeem(query["resultCode"]).json()
    assert result["microsoftAttempts"] == 2
    assert outcome_event(world, query["actionItemId"])["microsoftAttempts"] == 2
    assert outcome_audit(world, query["actionItemId"])["microsoftAttempts"] == 2


def test_single_503_for_the_app_only_token_is_retried_and_the_consent_completes(
    world: World,
) -> None:
    """The consent's confirmation token fails once: retried, and the grant is confirmed."""
    world.register()
    launched = world.click(world.link("GET_PRESENCE_CONSENT")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.fail_next_token_requests(1, status=503)
    query = returned(world.callback(params))
    assert query["status"] == "completed"
    assert world.redeem(query["resultCode"]).json()["microsoftAttempts"] == 2


def test_microsoft_down_for_good_gives_up_after_a_bounded_number_of_tries(world: World) -> None:
    """Microsoft stays down: a few tries with short pauses, then MICROSOFT_UNAVAILABLE."""
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.emulator.fail_next_token_requests(100, status=503)
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_UNAVAILABLE")
    assert world.sleeps == list(RETRY_DELAYS)
    assert outcome_event(world, query["actionItemId"])["microsoftAttempts"] == 4


def test_redemption_retries_stop_at_the_flows_deadline(world: World) -> None:
    """No retry starts after the flow expires: its code would be refused anyway."""
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    world.clock.advance(seconds=world.runtime.settings.flow_ttl_seconds - 0.5)
    world.emulator.fail_next_token_requests(100, status=503)
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "MICROSOFT_UNAVAILABLE")
    assert world.sleeps == [RETRY_DELAYS[0]]
    assert outcome_event(world, query["actionItemId"])["microsoftAttempts"] == 2


def test_rejected_code_is_not_retried(world: World) -> None:
    """invalid_grant is Microsoft's final word: one request, no pause."""
    launched = world.click(world.link("REGISTRATION")["url"])
    params = world.at_microsoft(launched.headers["location"], CONTOSO_ADMIN)
    params["code"] = params["code"][:-2] + "xx"
    query = returned(world.callback(params))
    assert (query["status"], query["errorCode"]) == ("failed", "INVALID_GRANT")
    assert world.sleeps == []


def test_jwks_fetch_is_retried_after_a_503() -> None:
    """A JWKS document Microsoft fails to serve once is fetched again after a short pause."""
    answers = iter([httpx.Response(503), httpx.Response(200, json={"keys": []})])
    pauses: list[float] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda request: next(answers)))
    response = RetryingJwksClient(client, pauses.append).get("https://login.test/k", timeout=1)
    assert (response.status_code, pauses) == (200, [RETRY_DELAYS[0]])


def test_jwks_fetch_gives_up_after_its_tries() -> None:
    """Connection refused every time: the last failure surfaces after a bounded wait."""
    pauses: list[float] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    try:
        RetryingJwksClient(client, pauses.append).get("https://login.test/k", timeout=1)
    except httpx.ConnectError:
        pass
    else:
        raise AssertionError("the fetch should have failed")
    assert pauses == list(RETRY_DELAYS)
