"""Events (the webhook outbox) and the audit trail, as the provider reads them."""

from __future__ import annotations

from sqlalchemy import func, select, update

from broker.db import events
from broker.db import providers as providers_table
from tests.flow.conftest import CONTOSO_ADMIN, CONTOSO_USER, World, returned


def list_events(world: World, **params: object) -> dict:  # type: ignore[type-arg]
    response = world.broker.get("/events", params=params, headers=world.headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_outcome_is_an_event_written_with_it(world: World) -> None:
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_ADMIN))
    returned(world.run("GET_CDR_CONSENT", CONTOSO_USER))
    items = list_events(world)["items"]
    assert [e["type"] for e in items] == [
        "actionItem.completed",
        "enterprise.registered",
        "actionItem.completed",
        "consent.granted",
        "actionItem.failed",
        "consent.failed",
    ]
    first = items[0]
    assert first["id"].startswith("evt_") and first["timestamp"].endswith("Z")
    assert first["data"]["state"] == "portal-state-42"
    assert "authenticationResult" not in first["data"]  # tokens only when asked for
    assert items[4]["data"]["errorCode"] == "NOT_GLOBAL_ADMIN"
    one = world.broker.get(f"/events/{first['id']}", headers=world.headers).json()
    assert one == first


def test_tokens_go_into_events_only_when_the_provider_asks(world: World) -> None:
    with world.runtime.engine.begin() as connection:
        connection.execute(update(providers_table).values(webhook_include_tokens=True))
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    data = list_events(world, type="actionItem.completed")["items"][0]["data"]
    assert data["authenticationResult"]["accessToken"]
    assert "refreshToken" not in data["authenticationResult"]


def test_events_filter_and_page(world: World) -> None:
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    for _ in range(2):
        world.clock.advance(milliseconds=5)
        returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_ADMIN))
    granted = list_events(world, type="consent.granted")["items"]
    assert len(granted) == 2
    page = list_events(world, limit=2)
    rest = list_events(world, cursor=page["nextCursor"])
    assert len(page["items"]) == 2 and len(rest["items"]) == 4 and rest["nextCursor"] is None
    assert list_events(world, enterpriseId=world.enterprise_id, limit=100)["items"]
    future = list_events(world, since="2030-01-01T00:00:00Z")
    assert future["items"] == []


def test_another_providers_events_are_invisible(world: World) -> None:
    from broker import providers
    from tests.conftest import CALLBACK

    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    event_id = list_events(world)["items"][0]["id"]
    _, key = providers.create_provider(world.runtime, "Globex", callback_urls=(CALLBACK,))
    other = {"Authorization": f"Bearer {key.api_key}"}
    assert world.broker.get("/events", headers=other).json()["items"] == []
    response = world.broker.get(f"/events/{event_id}", headers=other)
    assert response.status_code == 404 and response.json()["code"] == "EVENT_NOT_FOUND"


def test_no_outcome_without_its_event(world: World) -> None:
    """Each finished action item has exactly the events of its outcome, none missing."""
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    with world.runtime.engine.connect() as connection:
        count = connection.execute(select(func.count()).select_from(events)).scalar_one()
    assert count == 2


def test_audit_trail_tells_who_did_what(world: World) -> None:
    link = world.link("REGISTRATION")
    world.broker.post(f"/actionItems/{link['actionItemId']}/revoke", headers=world.headers)
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    entries = world.broker.get("/audit", params={"limit": 100}, headers=world.headers).json()[
        "items"
    ]
    actions = [(e["actor"], e["action"]) for e in entries]
    assert actions == [
        ("provider", "enterprise.created"),
        ("provider", "actionItem.created"),
        ("provider", "actionItem.revoked"),
        ("provider", "actionItem.created"),
        ("admin", "actionItem.opened"),
        ("admin", "actionItem.completed"),
    ]
    only = world.broker.get(
        "/audit", params={"actionItemId": link["actionItemId"]}, headers=world.headers
    ).json()["items"]
    assert [e["action"] for e in only] == ["actionItem.created", "actionItem.revoked"]


def test_key_rotation_is_audited(world: World) -> None:
    from broker import providers

    new = providers.rotate_key(world.runtime, world.provider_id, overlap_seconds=60)
    entries = world.broker.get("/audit", headers=world.headers).json()["items"]
    assert entries[-1]["action"] == "apiKey.rotated"
    assert entries[-1]["actor"] == "operator"
    assert entries[-1]["details"]["newKeyId"] == new.key_id


def test_webhook_attempts_are_listed_and_an_event_can_be_redelivered(world: World) -> None:
    import httpx

    from broker import providers, webhooks

    providers.set_webhook_url(world.runtime, world.provider_id, "https://hooks.portal.example/in")
    secret = webhooks.ensure_webhook_secret(world.runtime, world.provider_id)
    assert secret and secret.startswith("whsec_")
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    client = httpx.Client(transport=httpx.MockTransport(receiver))
    assert webhooks.enqueue_new_events(world.runtime) == 2

    def deliver() -> webhooks.DeliveryPass:
        return webhooks.deliver_due(world.runtime, client, resolve=lambda host: ["52.96.0.1"])

    assert deliver().delivered == 2
    event_id = list_events(world)["items"][0]["id"]
    first = received[0]
    assert first.headers["webhook-id"] == event_id
    timestamp = int(first.headers["webhook-timestamp"])  # the test clock's time, not now
    assert first.headers["webhook-signature"] == webhooks.sign_webhook(
        [secret], event_id, timestamp, first.content.decode()
    )
    report = world.broker.get(f"/events/{event_id}/attempts", headers=world.headers).json()
    assert report["delivery"]["status"] == "delivered"
    assert [a["outcome"] for a in report["attempts"]] == ["delivered"]
    again = world.broker.post(f"/events/{event_id}/redeliver", headers=world.headers)
    assert again.status_code == 202 and again.json()["status"] == "pending"
    assert deliver().delivered == 1
    assert received[-1].headers["webhook-id"] == event_id  # same id: receivers dedupe
    report = world.broker.get(f"/events/{event_id}/attempts", headers=world.headers).json()
    assert len(report["attempts"]) == 2


def test_redelivery_without_a_webhook_url_is_refused(world: World) -> None:
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    event_id = list_events(world)["items"][0]["id"]
    report = world.broker.get(f"/events/{event_id}/attempts", headers=world.headers).json()
    assert report == {"attempts": []}
    refused = world.broker.post(f"/events/{event_id}/redeliver", headers=world.headers)
    assert refused.status_code == 409 and refused.json()["code"] == "WEBHOOK_NOT_CONFIGURED"
