"""Malformed requests: each gets a problem+json 4xx with a stable code, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import CALLBACK, ProviderAccount

PROBLEM = "application/problem+json"


@pytest.fixture
def enterprise_id(client: Any, provider: ProviderAccount) -> str:
    response = client.post(
        "/enterprises", json={"name": "Contoso", "externalId": "cust-1"}, headers=provider.headers
    )
    return str(response.json()["enterpriseId"])


def post_raw(
    client: Any,
    provider: ProviderAccount,
    path: str,
    body: bytes,
    content_type: str = "application/json",
) -> Any:
    return client.post(
        path, content=body, headers={**provider.headers, "Content-Type": content_type}
    )


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:ctt-broker:problem:{code}"
    assert body["title"]
    return dict(body)


def valid_request(enterprise_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "actionType": "REGISTRATION",
        "enterpriseId": enterprise_id,
        "callbackUrl": CALLBACK,
        **changes,
    }


def test_unknown_action_type_is_refused_with_its_code(
    client: Any, provider: ProviderAccount, enterprise_id: str
) -> None:
    response = client.post(
        "/enterprise/getActionItemUrl",
        json=valid_request(enterprise_id, actionType="GET_PIZZA_CONSENT"),
        headers=provider.headers,
    )
    assert assert_problem(response, 400, "UNKNOWN_ACTION_TYPE")["field"] == "actionType"


def test_unknown_field_is_refused(
    client: Any, provider: ProviderAccount, enterprise_id: str
) -> None:
    response = client.post(
        "/enterprise/getActionItemUrl",
        json=valid_request(enterprise_id, redirectTo="https://evil.example"),
        headers=provider.headers,
    )
    assert_problem(response, 400, "INVALID_REQUEST")


def test_missing_required_field_is_refused(
    client: Any, provider: ProviderAccount, enterprise_id: str
) -> None:
    body = valid_request(enterprise_id)
    del body["callbackUrl"]
    response = client.post("/enterprise/getActionItemUrl", json=body, headers=provider.headers)
    assert "callbackUrl" in assert_problem(response, 400, "INVALID_REQUEST")["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actionType", 7),
        ("enterpriseId", ["ent"]),
        ("callbackUrl", None),
        ("expiresInSeconds", "3600"),
        ("expiresInSeconds", 3600.5),
        ("reregister", "yes"),
        ("resultDelivery", "carrier_pigeon"),
    ],
)
def test_wrong_type_is_refused(
    client: Any, provider: ProviderAccount, enterprise_id: str, field: str, value: Any
) -> None:
    response = client.post(
        "/enterprise/getActionItemUrl",
        json=valid_request(enterprise_id, **{field: value}),
        headers=provider.headers,
    )
    expected = "UNKNOWN_ACTION_TYPE" if field == "actionType" else "INVALID_REQUEST"
    assert assert_problem(response, 400, expected)["field"] == field


@pytest.mark.parametrize("state", ["x" * 513, "line\nbreak", "tab\there", "caf\u00e9", "\x00"])
def test_unprintable_or_overlong_provider_state_is_refused(
    client: Any, provider: ProviderAccount, enterprise_id: str, state: str
) -> None:
    response = client.post(
        "/enterprise/getActionItemUrl",
        json=valid_request(enterprise_id, state=state),
        headers=provider.headers,
    )
    assert assert_problem(response, 400, "INVALID_STATE_PARAMETER")["field"] == "state"


def test_malformed_enterprise_id_is_refused(client: Any, provider: ProviderAccount) -> None:
    response = client.post(
        "/enterprise/getActionItemUrl",
        json=valid_request("ent_../../etc/passwd"),
        headers=provider.headers,
    )
    assert_problem(response, 400, "INVALID_REQUEST")
    assert_problem(
        client.get("/enterprises/nope", headers=provider.headers), 400, "INVALID_REQUEST"
    )


def test_well_formed_but_unknown_ids_are_not_found(client: Any, provider: ProviderAccount) -> None:
    ghost = "ent_01JCX3Q2B6V7W8X9Y0Z1A2B3C4"
    assert_problem(
        client.get(f"/enterprises/{ghost}", headers=provider.headers), 404, "ENTERPRISE_NOT_FOUND"
    )
    item = "act_01JCX3Q2B6V7W8X9Y0Z1A2B3C4"
    assert_problem(
        client.get(f"/actionItems/{item}", headers=provider.headers), 404, "ACTION_ITEM_NOT_FOUND"
    )
    assert_problem(
        client.post(f"/actionItems/{item}/revoke", headers=provider.headers),
        404,
        "ACTION_ITEM_NOT_FOUND",
    )


def test_invalid_utf8_body_is_refused_not_a_500(client: Any, provider: ProviderAccount) -> None:
    """Connexion decodes JSON bodies without catching UnicodeDecodeError; we answer 400."""
    response = post_raw(
        client, provider, "/enterprises", b'{"name": "\xff\xfe", "externalId": "x"}'
    )
    assert_problem(response, 400, "INVALID_REQUEST_BODY")


def test_invalid_utf8_error_handler_covers_the_connexion_path() -> None:
    """If a body ever reaches Connexion undecodable, the error handler still maps it."""
    from handlers.problems import translate

    error, _ = translate(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    assert (error.status, error.code) == (400, "INVALID_REQUEST_BODY")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"not json",
        b'{"name": NaN, "externalId": "x"}',
        b"[" * 5000 + b"]" * 5000,
        b"\x00",
    ],
    ids=["empty", "truncated", "text", "nan", "deeply-nested", "nul"],
)
def test_broken_json_body_is_refused(client: Any, provider: ProviderAccount, body: bytes) -> None:
    response = post_raw(client, provider, "/enterprises", body)
    assert response.status_code == 400
    assert response.json()["code"] in ("INVALID_REQUEST_BODY", "INVALID_REQUEST")


def test_json_that_is_not_an_object_is_refused(client: Any, provider: ProviderAccount) -> None:
    for body in (b"[]", b'"text"', b"42", b"null"):
        response = post_raw(client, provider, "/enterprises", body)
        assert_problem(response, 400, "INVALID_REQUEST")


def test_body_too_large_is_refused(client: Any, provider: ProviderAccount) -> None:
    body = json.dumps({"name": "x" * 70_000, "externalId": "x"}).encode()
    assert_problem(post_raw(client, provider, "/enterprises", body), 413, "PAYLOAD_TOO_LARGE")


def test_body_too_large_without_content_length_is_refused(
    client: Any, provider: ProviderAccount
) -> None:
    def chunks() -> Any:
        for _ in range(20):
            yield b" " * 4096

    response = client.post(
        "/enterprises",
        content=chunks(),
        headers={**provider.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "PAYLOAD_TOO_LARGE")


def test_wrong_content_type_is_refused(client: Any, provider: ProviderAccount) -> None:
    response = post_raw(
        client,
        provider,
        "/enterprises",
        b"name=x&externalId=y",
        "application/x-www-form-urlencoded",
    )
    assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_unknown_query_parameter_is_refused(client: Any, provider: ProviderAccount) -> None:
    response = client.get("/enterprises", params={"admin": "true"}, headers=provider.headers)
    assert_problem(response, 400, "INVALID_REQUEST")


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1e3"])
def test_out_of_range_limit_is_refused(client: Any, provider: ProviderAccount, limit: str) -> None:
    response = client.get("/enterprises", params={"limit": limit}, headers=provider.headers)
    assert assert_problem(response, 400, "INVALID_REQUEST")["field"] == "limit"


@pytest.mark.parametrize(
    "cursor", ["garbage", "act_01JCX3Q2B6V7W8X9Y0Z1A2B3C4", "ent_01JCX3Q2B6V7W8X9Y0Z1A2B3CU", "%%%"]
)
def test_forged_cursor_is_refused(client: Any, provider: ProviderAccount, cursor: str) -> None:
    response = client.get("/enterprises", params={"cursor": cursor}, headers=provider.headers)
    assert assert_problem(response, 400, "INVALID_REQUEST")["field"] == "cursor"


def test_cursor_of_another_kind_is_refused_by_the_domain(
    runtime: Any, provider: ProviderAccount
) -> None:
    from broker import errors
    from broker.enterprises import list_enterprises

    with pytest.raises(errors.InvalidCursor):
        list_enterprises(
            runtime, provider.provider_id, limit=5, cursor="act_01JCX3Q2B6V7W8X9Y0Z1A2B3C4"
        )


def test_unknown_route_and_wrong_method_get_problems(
    client: Any, provider: ProviderAccount
) -> None:
    assert_problem(client.get("/admin", headers=provider.headers), 404, "NOT_FOUND")
    assert_problem(
        client.delete("/enterprises", headers=provider.headers), 405, "METHOD_NOT_ALLOWED"
    )


@pytest.mark.parametrize(
    "name",
    ["", " padded ", "tab\tname", "x" * 201],
    ids=["empty", "padded", "control", "overlong"],
)
def test_bad_enterprise_name_is_refused(client: Any, provider: ProviderAccount, name: str) -> None:
    response = client.post(
        "/enterprises", json={"name": name, "externalId": "e1"}, headers=provider.headers
    )
    assert_problem(response, 400, "INVALID_REQUEST")
