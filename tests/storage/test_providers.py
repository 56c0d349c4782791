"""Providers and API keys in storage: hashes only, rotation, revocation."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from broker import errors, providers
from broker.db import api_keys
from broker.runtime import Runtime
from broker.tokens import digest
from tests.conftest import FakeClock


def test_api_key_is_stored_only_as_a_hash(runtime: Runtime) -> None:
    """A database dump must not yield a usable key."""
    _, key = providers.create_provider(runtime, "Acme")
    assert key.api_key.startswith("ctt_sk_") and len(key.api_key) == 50
    with runtime.engine.connect() as connection:
        row = connection.execute(select(api_keys)).mappings().one()
    assert key.api_key not in str(dict(row))
    assert row["key_hash"] == digest(key.api_key)
    assert "***" in repr(key) and key.api_key not in repr(key)


def test_two_keys_are_never_alike(runtime: Runtime) -> None:
    _, first = providers.create_provider(runtime, "Acme")
    second = providers.rotate_key(runtime, "Acme", overlap_seconds=60)
    assert first.api_key != second.api_key


def test_authenticate_maps_a_key_to_its_provider(runtime: Runtime) -> None:
    provider, key = providers.create_provider(runtime, "Acme")
    assert providers.authenticate(runtime, key.api_key) == provider.provider_id
    with pytest.raises(errors.Unauthenticated):
        providers.authenticate(runtime, key.api_key[:-1] + ("A" if key.api_key[-1] != "A" else "B"))


def test_rotation_keeps_an_earlier_expiry(runtime: Runtime, clock: FakeClock) -> None:
    _, old = providers.create_provider(runtime, "Acme")
    providers.rotate_key(runtime, "Acme", overlap_seconds=60)
    providers.rotate_key(runtime, "Acme", overlap_seconds=3600)
    clock.advance(seconds=61)
    with pytest.raises(errors.Unauthenticated):
        providers.authenticate(runtime, old.api_key)


def test_provider_names_are_unique_and_tidy(runtime: Runtime) -> None:
    providers.create_provider(runtime, "Acme")
    with pytest.raises(errors.ProviderNameTaken):
        providers.create_provider(runtime, "Acme")
    with pytest.raises(errors.InvalidRequest):
        providers.create_provider(runtime, "<script>")


def test_callbacks_are_checked_when_registered(runtime: Runtime) -> None:
    providers.create_provider(runtime, "Acme")
    assert (
        providers.add_callback(runtime, "Acme", "HTTPS://Portal.Example.com:443/cb")
        == "https://portal.example.com/cb"
    )
    providers.add_callback(runtime, "Acme", "https://portal.example.com/cb")
    assert providers.get_provider(runtime, "Acme").callback_urls == (
        "https://portal.example.com/cb",
    )
    with pytest.raises(errors.CallbackUrlInsecureHttp):
        providers.add_callback(runtime, "Acme", "http://portal.example.com/cb")
    providers.remove_callback(runtime, "Acme", "https://portal.example.com/cb")
    assert providers.get_provider(runtime, "Acme").callback_urls == ()
    with pytest.raises(errors.NotFound):
        providers.remove_callback(runtime, "Acme", "https://portal.example.com/cb")


def test_revoking_an_unknown_key_is_an_error(runtime: Runtime) -> None:
    providers.create_provider(runtime, "Acme")
    with pytest.raises(errors.ApiKeyNotFound):
        providers.revoke_key(runtime, "Acme", "key_01JCX3Q2B6V7W8X9Y0Z1A2B3C4")


def test_webhook_url_is_validated_like_a_callback(runtime: Runtime) -> None:
    providers.create_provider(runtime, "Acme")
    with pytest.raises(errors.CallbackUrlUserinfo):
        providers.set_webhook_url(runtime, "Acme", "https://u:p@hooks.example.com/in")
    providers.set_webhook_url(runtime, "Acme", "https://hooks.example.com/in")
    assert providers.get_provider(runtime, "Acme").webhook_url == "https://hooks.example.com/in"
