"""Enterprises over HTTP: create, read, list, and isolation between providers."""

from __future__ import annotations

from typing import Any

from broker.enterprises import record_registration
from broker.runtime import Runtime
from tests.conftest import FakeClock, ProviderAccount


def create(
    client: Any, provider: ProviderAccount, external_id: str = "cust-1", name: str = "Contoso"
) -> Any:
    return client.post(
        "/enterprises", json={"name": name, "externalId": external_id}, headers=provider.headers
    )


def test_create_enterprise_returns_it_unregistered_with_every_consent_not_requested(
    client: Any, provider: ProviderAccount
) -> None:
    response = create(client, provider)
    assert response.status_code == 201
    body = response.json()
    assert response.headers["location"] == f"/enterprises/{body['enterpriseId']}"
    assert body["name"] == "Contoso" and body["externalId"] == "cust-1"
    assert body["registration"] == {
        "status": "notRegistered",
        "tenantId": None,
        "registeredAt": None,
    }
    assert [c["consentType"] for c in body["consents"]] == [
        "UserSync",
        "Presence",
        "CallApp",
        "Contacts",
        "CDR",
        "CallRecording",
        "ServiceProviderManagement",
    ]
    assert {c["status"] for c in body["consents"]} == {"notRequested"}
    assert body["createdAt"] == "2026-11-27T09:00:00Z"
    assert response.headers["cache-control"] == "no-store"


def test_external_id_is_unique_per_provider_only(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount
) -> None:
    assert create(client, provider, "cust-1").status_code == 201
    duplicate = create(client, provider, "cust-1")
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"] == "application/problem+json"
    assert duplicate.json()["code"] == "ENTERPRISE_EXTERNAL_ID_TAKEN"
    assert create(client, other_provider, "cust-1").status_code == 201


def test_get_enterprise_shows_registration_once_bound(
    client: Any, provider: ProviderAccount, runtime: Runtime, clock: FakeClock
) -> None:
    enterprise_id = create(client, provider).json()["enterpriseId"]
    clock.advance(minutes=5)
    record_registration(
        runtime, provider.provider_id, enterprise_id, "4c1d2a0e-5a0b-4f6c-9d0e-1a2b3c4d5e6f"
    )
    body = client.get(f"/enterprises/{enterprise_id}", headers=provider.headers).json()
    assert body["registration"] == {
        "status": "registered",
        "tenantId": "4c1d2a0e-5a0b-4f6c-9d0e-1a2b3c4d5e6f",
        "registeredAt": "2026-11-27T09:05:00Z",
    }


def test_another_providers_enterprise_is_not_found_rather_than_forbidden(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount
) -> None:
    """A provider probing ids learns nothing: someone else's enterprise looks absent."""
    enterprise_id = create(client, provider).json()["enterpriseId"]
    response = client.get(f"/enterprises/{enterprise_id}", headers=other_provider.headers)
    assert response.status_code == 404
    assert response.json()["code"] == "ENTERPRISE_NOT_FOUND"
    listing = client.get("/enterprises", headers=other_provider.headers).json()
    assert listing == {"items": [], "nextCursor": None}


def test_list_enterprises_pages_with_a_cursor(
    client: Any, provider: ProviderAccount, clock: FakeClock
) -> None:
    created = []
    for n in range(5):
        clock.advance(milliseconds=1)
        created.append(create(client, provider, f"cust-{n}").json()["enterpriseId"])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/enterprises", params=params, headers=provider.headers).json()
        seen += [item["enterpriseId"] for item in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == created
    assert pages == 3


def test_list_enterprises_filters_by_external_id(client: Any, provider: ProviderAccount) -> None:
    create(client, provider, "cust-a")
    wanted = create(client, provider, "cust-b").json()["enterpriseId"]
    page = client.get("/enterprises", params={"externalId": "cust-b"}, headers=provider.headers)
    assert [item["enterpriseId"] for item in page.json()["items"]] == [wanted]


def test_consent_becomes_pending_while_a_link_is_live_and_reverts_when_it_expires(
    client: Any, provider: ProviderAccount, runtime: Runtime, clock: FakeClock
) -> None:
    enterprise_id = create(client, provider).json()["enterpriseId"]
    record_registration(
        runtime, provider.provider_id, enterprise_id, "11111111-2222-3333-4444-555555555555"
    )
    client.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "GET_PRESENCE_CONSENT",
            "enterpriseId": enterprise_id,
            "callbackUrl": "https://portal.example.com/teams/callback",
            "expiresInSeconds": 60,
        },
        headers=provider.headers,
    )

    def presence() -> dict[str, Any]:
        body = client.get(f"/enterprises/{enterprise_id}", headers=provider.headers).json()
        return next(c for c in body["consents"] if c["consentType"] == "Presence")

    assert presence()["status"] == "pending"
    assert presence()["requestedAt"] == "2026-11-27T09:00:00Z"
    clock.advance(seconds=61)
    assert presence()["status"] == "notRequested"
