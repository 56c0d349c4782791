"""getActionItemUrl, action item status and revocation over HTTP."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import select

from broker.db import action_items
from broker.enterprises import record_registration
from broker.runtime import Runtime
from tests.conftest import CALLBACK, FakeClock, ProviderAccount

TENANT = "4c1d2a0e-5a0b-4f6c-9d0e-1a2b3c4d5e6f"
CONSENT_TYPES = [
    ("GET_USER_SYNC_CONSENT", "UserSync"),
    ("GET_PRESENCE_CONSENT", "Presence"),
    ("GET_CALL_APP_CONSENT", "CallApp"),
    ("GET_CONTACTS_CONSENT", "Contacts"),
    ("GET_CDR_CONSENT", "CDR"),
    ("GET_CALL_RECORDING_CONSENT", "CallRecording"),
    ("GET_SERVICE_PROVIDER_CONSENT", "ServiceProviderManagement"),
]


@pytest.fixture
def enterprise_id(client: Any, provider: ProviderAccount) -> str:
    response = client.post(
        "/enterprises", json={"name": "Contoso", "externalId": "cust-1"}, headers=provider.headers
    )
    return str(response.json()["enterpriseId"])


@pytest.fixture
def registered(runtime: Runtime, provider: ProviderAccount, enterprise_id: str) -> str:
    record_registration(runtime, provider.provider_id, enterprise_id, TENANT)
    return enterprise_id


def ask(client: Any, provider: ProviderAccount, **body: Any) -> Any:
    body.setdefault("callbackUrl", CALLBACK)
    return client.post("/enterprise/getActionItemUrl", json=body, headers=provider.headers)


def test_registration_link_is_created_with_a_secret_handle_stored_only_as_a_hash(
    client: Any, provider: ProviderAccount, enterprise_id: str, runtime: Runtime
) -> None:
    response = ask(
        client, provider, actionType="REGISTRATION", enterpriseId=enterprise_id, state="order-77"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["actionType"] == "REGISTRATION"
    assert body["consentType"] is None and body["mandatory"] is True
    assert body["status"] == "created"
    assert body["expiresAt"] == "2026-11-28T09:00:00Z"
    assert response.headers["location"] == f"/actionItems/{body['actionItemId']}"
    prefix = "https://broker.test/actions/"
    assert body["url"].startswith(prefix)
    handle = body["url"][len(prefix) :]
    assert len(handle) >= 43  # 256 bits in base64url
    assert handle != body["actionItemId"]
    with runtime.engine.connect() as connection:
        stored = connection.execute(select(action_items)).mappings().one()
    assert stored["handle_hash"] == hashlib.sha256(handle.encode()).hexdigest()
    assert handle not in str(dict(stored).values())


@pytest.mark.parametrize(("action_type", "consent_type"), CONSENT_TYPES)
def test_every_consent_action_type_is_issued_for_a_registered_enterprise(
    client: Any, provider: ProviderAccount, registered: str, action_type: str, consent_type: str
) -> None:
    response = ask(client, provider, actionType=action_type, enterpriseId=registered)
    assert response.status_code == 201, response.text
    assert response.json()["consentType"] == consent_type


@pytest.mark.parametrize("action_type", [a for a, _ in CONSENT_TYPES] + ["LOGIN_ENTERPRISE_ADMIN"])
def test_consent_and_login_on_an_unregistered_enterprise_are_refused(
    client: Any, provider: ProviderAccount, enterprise_id: str, action_type: str
) -> None:
    response = ask(client, provider, actionType=action_type, enterpriseId=enterprise_id)
    assert response.status_code == 409
    assert response.json()["code"] == "ENTERPRISE_NOT_REGISTERED"


def test_registration_of_a_registered_enterprise_needs_reregister(
    client: Any, provider: ProviderAccount, registered: str
) -> None:
    refused = ask(client, provider, actionType="REGISTRATION", enterpriseId=registered)
    assert refused.status_code == 409
    assert refused.json()["code"] == "ENTERPRISE_ALREADY_REGISTERED"
    allowed = ask(
        client, provider, actionType="REGISTRATION", enterpriseId=registered, reregister=True
    )
    assert allowed.status_code == 201


def test_login_link_for_a_registered_enterprise(
    client: Any, provider: ProviderAccount, registered: str
) -> None:
    response = ask(client, provider, actionType="LOGIN_ENTERPRISE_ADMIN", enterpriseId=registered)
    assert response.status_code == 201
    assert response.json()["mandatory"] is False


def test_status_reads_back_everything_the_provider_sent(
    client: Any, provider: ProviderAccount, enterprise_id: str
) -> None:
    created = ask(
        client,
        provider,
        actionType="REGISTRATION",
        enterpriseId=enterprise_id,
        callbackUrl=CALLBACK + "?customer=1042",
        state="opaque value 42",
        resultDelivery="form_post",
        expiresInSeconds=3600,
    ).json()
    item = client.get(f"/actionItems/{created['actionItemId']}", headers=provider.headers).json()
    assert item["callbackUrl"] == CALLBACK + "?customer=1042"
    assert item["state"] == "opaque value 42"
    assert item["resultDelivery"] == "form_post"
    assert item["status"] == "created"
    assert item["expiresAt"] == "2026-11-27T10:00:00Z"
    assert item["openedAt"] is None and item["finishedAt"] is None and item["revokedAt"] is None


def test_link_lifetime_is_bounded(
    client: Any, provider: ProviderAccount, enterprise_id: str
) -> None:
    for lifetime in (59, 2592001, 0, -1):
        response = ask(
            client,
            provider,
            actionType="REGISTRATION",
            enterpriseId=enterprise_id,
            expiresInSeconds=lifetime,
        )
        assert response.status_code == 400
        assert response.json()["code"] == "INVALID_REQUEST"
        assert response.json()["field"] == "expiresInSeconds"
    for lifetime in (60, 2592000):
        response = ask(
            client,
            provider,
            actionType="REGISTRATION",
            enterpriseId=enterprise_id,
            expiresInSeconds=lifetime,
        )
        assert response.status_code == 201


def test_expired_link_reports_expired_and_can_still_be_revoked(
    client: Any, provider: ProviderAccount, enterprise_id: str, clock: FakeClock
) -> None:
    item_id = ask(
        client, provider, actionType="REGISTRATION", enterpriseId=enterprise_id, expiresInSeconds=60
    ).json()["actionItemId"]
    clock.advance(seconds=60)
    assert (
        client.get(f"/actionItems/{item_id}", headers=provider.headers).json()["status"]
        == "expired"
    )
    # Revoking also stops a round trip the admin began before the link expired.
    response = client.post(f"/actionItems/{item_id}/revoke", headers=provider.headers)
    assert response.status_code == 200
    assert response.json()["status"] == "revoked"


def test_revoke_is_immediate_and_idempotent(
    client: Any, provider: ProviderAccount, enterprise_id: str, clock: FakeClock
) -> None:
    item_id = ask(client, provider, actionType="REGISTRATION", enterpriseId=enterprise_id).json()[
        "actionItemId"
    ]
    clock.advance(seconds=30)
    first = client.post(f"/actionItems/{item_id}/revoke", headers=provider.headers)
    assert first.status_code == 200
    assert first.json()["status"] == "revoked"
    assert first.json()["revokedAt"] == "2026-11-27T09:00:30Z"
    clock.advance(seconds=30)
    again = client.post(f"/actionItems/{item_id}/revoke", headers=provider.headers)
    assert again.status_code == 200
    assert again.json()["revokedAt"] == "2026-11-27T09:00:30Z"


def test_another_providers_action_item_cannot_be_read_or_revoked(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount, enterprise_id: str
) -> None:
    """A provider that guesses or steals another provider's action item id gets nothing."""
    item_id = ask(client, provider, actionType="REGISTRATION", enterpriseId=enterprise_id).json()[
        "actionItemId"
    ]
    for response in (
        client.get(f"/actionItems/{item_id}", headers=other_provider.headers),
        client.post(f"/actionItems/{item_id}/revoke", headers=other_provider.headers),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "ACTION_ITEM_NOT_FOUND"
    assert (
        client.get(f"/actionItems/{item_id}", headers=provider.headers).json()["status"]
        == "created"
    )


def test_link_for_another_providers_enterprise_is_refused_as_not_found(
    client: Any, other_provider: ProviderAccount, enterprise_id: str
) -> None:
    response = client.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "REGISTRATION",
            "enterpriseId": enterprise_id,
            "callbackUrl": "https://portal.other.example/return",
        },
        headers=other_provider.headers,
    )
    assert response.status_code == 404
    assert response.json()["code"] == "ENTERPRISE_NOT_FOUND"


def test_callback_allowed_for_another_provider_is_refused(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount, enterprise_id: str
) -> None:
    """Provider A cannot send its admins to provider B's portal, even though B allowed it."""
    response = ask(
        client,
        provider,
        actionType="REGISTRATION",
        enterpriseId=enterprise_id,
        callbackUrl="https://portal.other.example/return",
    )
    assert response.status_code == 400
    assert response.json()["code"] == "CALLBACK_URL_NOT_ALLOWED"


@pytest.mark.parametrize(
    ("callback", "code"),
    [
        ("https://evil.example/teams/callback", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://portal.example.com:444/teams/callback", "CALLBACK_URL_NOT_ALLOWED"),
        ("https://portal.example.com/teams/other", "CALLBACK_URL_NOT_ALLOWED"),
        ("http://portal.example.com/teams/callback", "CALLBACK_URL_INSECURE_HTTP"),
        ("https://user:pw@portal.example.com/teams/callback", "CALLBACK_URL_USERINFO"),
        ("https://portal.example.com/teams/callback#x", "CALLBACK_URL_FRAGMENT"),
        ("https://portal.example.com\\teams/callback", "CALLBACK_URL_BACKSLASH"),
        ("https://portal.example.com/teams/callback\n", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
        ("https://portal.example.com/teams%2Fcallback", "CALLBACK_URL_ENCODED_CHARACTERS"),
        ("https://portal.example.com/" + "x" * 3000, "CALLBACK_URL_TOO_LONG"),
        ("javascript:alert(document.domain)", "CALLBACK_URL_SCHEME_NOT_ALLOWED"),
        (
            "https://portal.example.com/teams/callback?status=completed",
            "CALLBACK_URL_RESERVED_PARAMETER",
        ),
        ("not a url", "CALLBACK_URL_FORBIDDEN_CHARACTERS"),
    ],
)
def test_bad_callback_url_gets_400_with_its_own_code(
    client: Any, provider: ProviderAccount, enterprise_id: str, callback: str, code: str
) -> None:
    response = ask(
        client,
        provider,
        actionType="REGISTRATION",
        enterpriseId=enterprise_id,
        callbackUrl=callback,
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_development_provider_may_use_loopback_http(client: Any, runtime: Runtime) -> None:
    from tests.conftest import make_provider

    dev = make_provider(
        runtime, "Dev Lab", development=True, callback_urls=("http://127.0.0.1:9000/cb",)
    )
    enterprise_id = client.post(
        "/enterprises", json={"name": "Lab", "externalId": "lab"}, headers=dev.headers
    ).json()["enterpriseId"]
    response = client.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "REGISTRATION",
            "enterpriseId": enterprise_id,
            "callbackUrl": "http://127.0.0.1:9000/cb",
        },
        headers=dev.headers,
    )
    assert response.status_code == 201


def test_list_action_items_of_an_enterprise(
    client: Any, provider: ProviderAccount, registered: str, clock: FakeClock
) -> None:
    ids = []
    for action_type, _ in CONSENT_TYPES[:3]:
        clock.advance(milliseconds=1)
        ids.append(
            ask(client, provider, actionType=action_type, enterpriseId=registered).json()[
                "actionItemId"
            ]
        )
    page = client.get(
        f"/enterprises/{registered}/actionItems", params={"limit": 2}, headers=provider.headers
    ).json()
    assert [i["actionItemId"] for i in page["items"]] == ids[:2]
    rest = client.get(
        f"/enterprises/{registered}/actionItems",
        params={"cursor": page["nextCursor"]},
        headers=provider.headers,
    ).json()
    assert [i["actionItemId"] for i in rest["items"]] == ids[2:]
    assert rest["nextCursor"] is None


def test_listing_another_providers_enterprise_is_not_found_whatever_the_cursor(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount, registered: str
) -> None:
    """The enterprise is checked before the cursor is read: whatever the cursor, 404."""
    for action_type in ("GET_PRESENCE_CONSENT", "GET_CDR_CONSENT"):
        ask(client, provider, actionType=action_type, enterpriseId=registered)
    page = client.get(
        f"/enterprises/{registered}/actionItems", params={"limit": 1}, headers=provider.headers
    ).json()
    assert page["nextCursor"]
    unknown = "ent_01M8R9RHCWFCXMTGKR1MF9T7H4"
    for enterprise in (registered, unknown):
        for params in ({}, {"cursor": page["nextCursor"]}, {"cursor": "act_" + "Z" * 26}):
            answer = client.get(
                f"/enterprises/{enterprise}/actionItems",
                params=params,
                headers=other_provider.headers,
            )
            assert answer.status_code == 404, (enterprise, params, answer.text)
            assert answer.json()["code"] == "ENTERPRISE_NOT_FOUND"


def test_action_type_catalog_lists_the_ten_types(client: Any, provider: ProviderAccount) -> None:
    items = client.get("/actionTypes", headers=provider.headers).json()["items"]
    assert len(items) == 10
    assert items[0] == {
        "actionType": "REGISTRATION",
        "kind": "signin",
        "consentType": None,
        "mandatory": True,
        "description": items[0]["description"],
    }
