"""Events (the webhook outbox) and the audit trail, as the provider reads them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from broker import providers
from broker.db import events, metadata
from broker.db import providers as providers_table
from broker.webhook_queue import enqueue_new_events
from broker.webhook_secrets import ensure_webhook_secret
from broker.webhook_sender import deliver_due
from broker.webhook_signatures import sign_webhook
from tests.fake_network import FakeNetwork
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
    assert first["eventId"].startswith("evt_") and first["timestamp"].endswith("Z")
    assert first["data"]["state"] == "portal-state-42"
    assert "authenticationResult" not in first["data"]  # tokens only when asked for
    assert items[4]["data"]["errorCode"] == "NOT_GLOBAL_ADMIN"
    one = world.broker.get(f"/events/{first['eventId']}", headers=world.headers).json()
    assert one == first


def test_tokens_reach_the_webhook_but_never_the_events_api_or_the_database(world: World) -> None:
    """A provider that shares refresh tokens gets them once, by webhook; nothing keeps them after.

    Attacker: anyone who later reads the events API with the provider's key, or a copy of the
    database. Both find no token string that was handed out.
    """
    with world.runtime.engine.begin() as connection:
        connection.execute(update(providers_table).values(share_refresh_token=True))
    providers.set_webhook_url(
        world.runtime, world.provider_id, "https://hooks.portal.example/in", include_tokens=True
    )
    secret = ensure_webhook_secret(world.runtime, world.provider_id)
    query = returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    redeemed = world.redeem(query["resultCode"]).json()["authenticationResult"]
    for item in list_events(world)["items"]:
        assert "authenticationResult" not in item["data"]
    network = FakeNetwork()
    assert enqueue_new_events(world.runtime) == 2
    assert deliver_due(world.runtime, network.sender()).delivered == 2
    bodies = [json.loads(request.body) for request in network.requests]
    handed_out = {
        value
        for body in bodies
        for name, value in body["data"].get("authenticationResult", {}).items()
        if name in ("accessToken", "idToken", "refreshToken")
    }
    assert len(handed_out) == 3  # access, ID and refresh token went out by webhook
    assert redeemed["refreshToken"] in handed_out
    for request in network.requests:  # signed over the body that carried the tokens
        stamp = int(request.headers["webhook-timestamp"])
        assert request.headers["webhook-signature"] == sign_webhook(
            [secret or ""], request.headers["webhook-id"], stamp, request.body.decode()
        )
    leftovers = {token for token in handed_out if token in every_text_in_the_database(world)}
    assert leftovers == set()


def every_text_in_the_database(world: World) -> str:
    """Every text value of every column of every table, concatenated."""
    chunks: list[str] = []
    with world.runtime.engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                chunks.extend(str(value) for value in row if value is not None)
    return "\n".join(chunks)


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


def rfc3339_spellings(moment: datetime) -> st.SearchStrategy[str]:
    """Every way RFC 3339 lets a client write ``moment``: case, offset, fraction."""

    def spell(t: str, z: str, offset_minutes: int, digits: int) -> str:
        local = moment + timedelta(minutes=offset_minutes)
        fraction = (
            f".{local.microsecond:06d}{'0' * max(0, digits - 6)}"[: digits + 1] if digits else ""
        )
        if offset_minutes == 0 and z:
            zone = z
        else:
            sign = "+" if offset_minutes >= 0 else "-"
            hours, minutes = divmod(abs(offset_minutes), 60)
            zone = f"{sign}{hours:02d}:{minutes:02d}"
        return local.strftime(f"%Y-%m-%d{t}%H:%M:%S") + fraction + zone

    return st.builds(
        spell,
        st.sampled_from(["T", "t"]),
        st.sampled_from(["Z", "z", ""]),
        st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
        st.sampled_from([0, 6, 9]),
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_rfc3339_spelling_of_a_time_filters_events_the_same(
    world: World, data: st.DataObject
) -> None:
    """``since=...z`` once answered 500: every valid spelling filters, none is an error."""
    if not list_events(world)["items"]:
        returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    created = datetime.fromisoformat(list_events(world)["items"][0]["timestamp"])
    moment = created.astimezone(UTC).replace(microsecond=created.microsecond)
    for name, expected in (("since", 2), ("until", 0)):
        spelled = data.draw(rfc3339_spellings(moment), label=name)
        response = world.broker.get("/events", params={name: spelled}, headers=world.headers)
        assert response.status_code == 200, (spelled, response.text)
        assert len(response.json()["items"]) == expected, spelled
    for name in ("since", "until"):
        lower = world.broker.get(
            "/events", params={name: "2020-01-01t00:00:00z"}, headers=world.headers
        )
        assert lower.status_code == 200


def test_another_providers_events_are_invisible(world: World) -> None:
    from broker import providers
    from tests.conftest import CALLBACK

    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    event_id = list_events(world)["items"][0]["eventId"]
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
    providers.set_webhook_url(world.runtime, world.provider_id, "https://hooks.portal.example/in")
    secret = ensure_webhook_secret(world.runtime, world.provider_id)
    assert secret and secret.startswith("whsec_")
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    network = FakeNetwork()
    assert enqueue_new_events(world.runtime) == 2
    assert deliver_due(world.runtime, network.sender()).delivered == 2
    event_id = list_events(world)["items"][0]["eventId"]
    first = network.requests[0]
    assert first.headers["webhook-id"] == event_id
    assert first.headers["host"] == "hooks.portal.example"
    assert network.server_names == ["hooks.portal.example"] * 2  # TLS checks the name
    timestamp = int(first.headers["webhook-timestamp"])  # the test clock's time, not now
    assert first.headers["webhook-signature"] == sign_webhook(
        [secret], event_id, timestamp, first.body.decode()
    )
    report = world.broker.get(f"/events/{event_id}/attempts", headers=world.headers).json()
    assert report["delivery"]["status"] == "delivered"
    assert [a["outcome"] for a in report["attempts"]] == ["delivered"]
    again = world.broker.post(f"/events/{event_id}/redeliver", headers=world.headers)
    assert again.status_code == 202 and again.json()["status"] == "pending"
    assert deliver_due(world.runtime, network.sender()).delivered == 1
    assert network.requests[-1].headers["webhook-id"] == event_id  # same id: receivers dedupe
    report = world.broker.get(f"/events/{event_id}/attempts", headers=world.headers).json()
    assert len(report["attempts"]) == 2


def test_a_whole_backlog_is_redelivered_by_one_call(world: World) -> None:
    providers.set_webhook_url(world.runtime, world.provider_id, "https://hooks.portal.example/in")
    ensure_webhook_secret(world.runtime, world.provider_id)
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    world.clock.advance(seconds=10)
    returned(world.run("GET_PRESENCE_CONSENT", CONTOSO_ADMIN))
    down = FakeNetwork(status=503)
    enqueue_new_events(world.runtime)
    assert deliver_due(world.runtime, down.sender()).retrying == 4
    assert deliver_due(world.runtime, down.sender()).attempted == 0  # backing off
    after = list_events(world)["items"][2]["timestamp"]
    response = world.broker.post(
        "/webhooks/redeliver", params={"since": after.lower()}, headers=world.headers
    )
    assert response.status_code == 202 and response.json() == {"rescheduled": 2}
    up = FakeNetwork()
    assert deliver_due(world.runtime, up.sender()).delivered == 2
    everything = world.broker.post("/webhooks/redeliver", headers=world.headers)
    assert everything.json() == {"rescheduled": 2}
    assert deliver_due(world.runtime, up.sender()).delivered == 2
    bad = world.broker.post(
        "/webhooks/redeliver", params={"until": "yesterday"}, headers=world.headers
    )
    assert bad.status_code == 400


def test_redelivery_without_a_webhook_url_is_refused(world: World) -> None:
    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    event_id = list_events(world)["items"][0]["eventId"]
    report = world.broker.get(f"/events/{event_id}/attempts", headers=world.headers).json()
    assert report == {"attempts": []}
    refused = world.broker.post(f"/events/{event_id}/redeliver", headers=world.headers)
    assert refused.status_code == 409 and refused.json()["code"] == "WEBHOOK_NOT_CONFIGURED"


def test_events_are_identified_by_event_id_in_the_api_and_in_webhooks(world: World) -> None:
    """Like actionItemId and auditId: events carry eventId, never a bare id."""
    from broker.event_sealing import open_event_body

    returned(world.run("REGISTRATION", CONTOSO_ADMIN))
    for item in list_events(world)["items"]:
        assert item["eventId"].startswith("evt_") and "id" not in item
    with world.runtime.engine.connect() as connection:
        row = connection.execute(select(events.c.payload, events.c.sealed_tokens)).first()
    assert row is not None
    body = json.loads(open_event_body(world.runtime, row.payload, row.sealed_tokens))
    assert body["eventId"].startswith("evt_") and "id" not in body


def test_events_stored_before_the_rename_are_shown_with_event_id(world: World) -> None:
    """An event written by an older version (with ``id``) reads and delivers as ``eventId``."""
    from broker.event_sealing import open_event_body

    old = {
        "id": "evt_01JCX3Q2B6V7W8X9Y0Z1A2B3C4",
        "type": "actionItem.failed",
        "timestamp": "2026-11-27T09:00:00Z",
        "data": {
            "actionItemId": "act_01JCX3Q2B6V7W8X9Y0Z1A2B3C4",
            "actionType": "REGISTRATION",
            "enterpriseId": world.enterprise_id,
            "status": "failed",
        },
    }
    with world.runtime.engine.begin() as connection:
        connection.execute(
            events.insert().values(
                id=old["id"],
                provider_id=world.provider_id,
                type="actionItem.failed",
                payload=json.dumps(old),
                created_at=world.clock(),
            )
        )
    listed = list_events(world)["items"]
    assert [e["eventId"] for e in listed] == [old["id"]] and "id" not in listed[0]
    one = world.broker.get(f"/events/{old['id']}", headers=world.headers).json()
    assert one["eventId"] == old["id"]
    assert json.loads(open_event_body(world.runtime, json.dumps(old), None))["eventId"] == old["id"]
