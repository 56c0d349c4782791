"""Races the storage layer must settle: two writers, one winner."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from broker import errors
from broker.action_items import create_action_item, revoke_action_item
from broker.enterprises import create_enterprise, record_registration
from broker.runtime import Runtime
from tests.conftest import CALLBACK, ProviderAccount


def test_two_enterprises_racing_for_one_external_id_get_one_winner(
    runtime: Runtime, provider: ProviderAccount
) -> None:
    def attempt(n: int) -> str:
        try:
            create_enterprise(runtime, provider.provider_id, name=f"E{n}", external_id="same")
            return "created"
        except errors.EnterpriseExternalIdTaken:
            return "taken"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, range(4)))
    assert sorted(outcomes) == ["created", "taken", "taken", "taken"]


def test_one_tenant_cannot_be_registered_to_two_enterprises_of_a_provider(
    runtime: Runtime, provider: ProviderAccount
) -> None:
    tenant = "4c1d2a0e-5a0b-4f6c-9d0e-1a2b3c4d5e6f"
    first = create_enterprise(runtime, provider.provider_id, name="A", external_id="a")
    second = create_enterprise(runtime, provider.provider_id, name="B", external_id="b")
    record_registration(runtime, provider.provider_id, first.enterprise_id, tenant)
    with pytest.raises(errors.Conflict):
        record_registration(runtime, provider.provider_id, second.enterprise_id, tenant)


def test_concurrent_revokes_all_succeed_and_agree(
    runtime: Runtime, provider: ProviderAccount
) -> None:
    enterprise = create_enterprise(runtime, provider.provider_id, name="A", external_id="a")
    issued = create_action_item(
        runtime,
        provider.provider_id,
        action_type="REGISTRATION",
        enterprise_id=enterprise.enterprise_id,
        callback_url=CALLBACK,
    )
    item_id = issued.item.action_item_id
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda _: revoke_action_item(runtime, provider.provider_id, item_id), range(4))
        )
    assert {r.status for r in results} == {"revoked"}
    assert len({r.revoked_at for r in results}) == 1
