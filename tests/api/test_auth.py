"""API keys: missing, malformed, unknown, rotated, revoked."""

from __future__ import annotations

from typing import Any

import pytest

from broker import providers
from broker.runtime import Runtime
from tests.conftest import FakeClock, ProviderAccount


def assert_unauthenticated(response: Any) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer ctt_sk_short",
        "Bearer ctt_sk_" + "A" * 43,
        "Bearer " + "x" * 5000,
        ("Bearer ctt_sk_\u00e9" + "A" * 42).encode("utf-8"),
    ],
    ids=[
        "missing",
        "empty",
        "no-token",
        "blank-token",
        "basic",
        "short",
        "unknown",
        "huge",
        "non-ascii",
    ],
)
def test_request_without_a_valid_key_is_refused(
    client: Any, provider: ProviderAccount, header: str | bytes | None
) -> None:
    headers: dict[str, Any] = {} if header is None else {"Authorization": header}
    assert_unauthenticated(client.get("/enterprises", headers=headers))


def test_every_provider_operation_requires_a_key(client: Any) -> None:
    ghost = "01JCX3Q2B6V7W8X9Y0Z1A2B3C4"
    for method, path in [
        ("GET", "/enterprises"),
        ("POST", "/enterprises"),
        ("GET", f"/enterprises/ent_{ghost}"),
        ("GET", f"/enterprises/ent_{ghost}/actionItems"),
        ("POST", "/enterprise/getActionItemUrl"),
        ("GET", f"/actionItems/act_{ghost}"),
        ("POST", f"/actionItems/act_{ghost}/revoke"),
        ("GET", "/actionTypes"),
    ]:
        assert_unauthenticated(client.request(method, path, json={} if method == "POST" else None))


def test_health_needs_no_key(client: Any) -> None:
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}


def test_rotated_key_works_during_the_overlap_then_stops(
    client: Any, provider: ProviderAccount, runtime: Runtime, clock: FakeClock
) -> None:
    new = providers.rotate_key(runtime, provider.provider_id, overlap_seconds=600)
    fresh = {"Authorization": f"Bearer {new.api_key}"}
    assert client.get("/enterprises", headers=provider.headers).status_code == 200
    assert client.get("/enterprises", headers=fresh).status_code == 200
    clock.advance(seconds=600)
    assert_unauthenticated(client.get("/enterprises", headers=provider.headers))
    assert client.get("/enterprises", headers=fresh).status_code == 200


def test_rotation_with_no_overlap_ends_the_old_key_at_once(
    client: Any, provider: ProviderAccount, runtime: Runtime
) -> None:
    providers.rotate_key(runtime, provider.provider_id, overlap_seconds=0)
    assert_unauthenticated(client.get("/enterprises", headers=provider.headers))


def test_revoked_key_is_refused_immediately(
    client: Any, provider: ProviderAccount, runtime: Runtime
) -> None:
    providers.revoke_key(runtime, provider.provider_id, provider.key_id)
    assert_unauthenticated(client.get("/enterprises", headers=provider.headers))
