"""Answers a provider can act on: its own configuration, near misses, the existing enterprise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker import providers, webhook_secrets
from broker.callbacks import near_miss, parse_callback_url
from broker.runtime import Runtime
from tests.conftest import CALLBACK, OTHER_CALLBACK, ProviderAccount


def ask_link(client: Any, provider: ProviderAccount, callback: str) -> Any:
    enterprise = client.post(
        "/enterprises", json={"name": "Contoso", "externalId": "c-near"}, headers=provider.headers
    )
    return client.post(
        "/enterprise/getActionItemUrl",
        json={
            "actionType": "REGISTRATION",
            "enterpriseId": enterprise.json()["enterpriseId"],
            "callbackUrl": callback,
        },
        headers=provider.headers,
    )


@pytest.mark.parametrize(
    ("callback", "difference"),
    [
        (CALLBACK + "/", "trailing slash"),
        ("https://portal.example.com/Teams/Callback", "path case"),
        ("http://portal.example.com/teams/callback", "scheme (http instead of https)"),
        ("https://portal.example.com:8443/teams/callback", "port (8443 instead of 443)"),
    ],
)
def test_refused_callback_lists_the_allowed_ones_and_the_near_miss(
    client: Any, provider: ProviderAccount, callback: str, difference: str
) -> None:
    response = ask_link(client, provider, callback)
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] in ("CALLBACK_URL_NOT_ALLOWED", "CALLBACK_URL_INSECURE_HTTP")
    if problem["code"] == "CALLBACK_URL_INSECURE_HTTP":
        return  # plain http is refused before the allow-list is consulted
    assert problem["allowedCallbacks"] == [CALLBACK]
    assert problem["nearMisses"] == [{"allowedCallback": CALLBACK, "difference": difference}]


def test_refused_callback_far_from_every_allowed_one_has_no_near_miss(
    client: Any, provider: ProviderAccount
) -> None:
    response = ask_link(client, provider, "https://elsewhere.example/teams/callback")
    assert response.json()["allowedCallbacks"] == [CALLBACK]
    assert response.json()["nearMisses"] == []


def test_refused_callback_never_lists_another_providers_callbacks(
    client: Any, provider: ProviderAccount, other_provider: ProviderAccount
) -> None:
    """Provider A probing with B's portal learns only its own allow-list, never B's."""
    response = ask_link(client, provider, OTHER_CALLBACK)
    assert OTHER_CALLBACK not in json.dumps(response.json())
    assert response.json()["allowedCallbacks"] == [CALLBACK]


def test_near_miss_between_identical_urls_is_never_reported() -> None:
    url = parse_callback_url(CALLBACK, development=False)
    assert near_miss(parse_callback_url("https://a.example/x", development=False), url) is None
    host_case = parse_callback_url("https://PORTAL.example.com/teams/callback", development=False)
    assert host_case.origin_and_path == url.origin_and_path  # host case is not even a miss
    plain = parse_callback_url("http://localhost:8080/cb", development=True)
    secure = parse_callback_url("https://localhost:8080/cb", development=True)
    assert near_miss(plain, secure) == "scheme (http instead of https)"


def test_taken_external_id_names_the_existing_enterprise(
    client: Any, provider: ProviderAccount
) -> None:
    first = client.post(
        "/enterprises", json={"name": "Contoso", "externalId": "dup"}, headers=provider.headers
    )
    again = client.post(
        "/enterprises", json={"name": "Contoso 2", "externalId": "dup"}, headers=provider.headers
    )
    assert again.status_code == 409
    assert again.json()["code"] == "ENTERPRISE_EXTERNAL_ID_TAKEN"
    assert again.json()["enterpriseId"] == first.json()["enterpriseId"]


def test_get_provider_describes_the_caller_without_any_secret(
    client: Any, runtime: Runtime, provider: ProviderAccount, other_provider: ProviderAccount
) -> None:
    """Who am I: callbacks, webhook settings and key ids; no key, prefix or webhook secret."""
    providers.set_webhook_url(runtime, provider.provider_id, "https://hooks.example.com/ctt")
    secret = webhook_secrets.ensure_webhook_secret(runtime, provider.provider_id)
    rotated = providers.rotate_key(runtime, provider.provider_id, overlap_seconds=60)
    response = client.get("/provider", headers=provider.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["providerId"] == provider.provider_id and body["name"] == "Acme Telecom"
    assert body["callbackUrls"] == [CALLBACK]
    assert body["webhook"]["url"] == "https://hooks.example.com/ctt"
    assert len(body["webhook"]["secrets"]) == 1
    assert [k["keyId"] for k in body["apiKeys"]] == [provider.key_id, rotated.key_id]
    text = response.text
    assert secret and secret not in text
    assert provider.api_key not in text and rotated.api_key not in text
    assert "ctt_sk_" not in text and "whsec_" not in text
    assert OTHER_CALLBACK not in text and other_provider.provider_id not in text


def test_get_provider_needs_a_key(client: Any) -> None:
    response = client.get("/provider")
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHENTICATED"
