"""No tokens at rest longer than needed: sealed events, erasure, retention, private files."""

from __future__ import annotations

import io
import json
import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from broker import errors
from broker.action_items import create_action_item
from broker.cli import EXIT_REFUSED, main
from broker.db import audit_log, events, flows, make_engine, webhook_attempts, webhook_deliveries
from broker.enterprises import create_enterprise
from broker.event_sealing import EventKeyring, open_event_body
from broker.events import emit_event, get_event, record_audit
from broker.providers import create_provider, get_provider
from broker.retention import enforce_retention
from broker.runtime import Runtime
from broker.webhook_queue import enqueue_new_events, get_delivery
from broker.webhook_secrets import ensure_webhook_secret
from broker.webhook_sender import deliver_due
from tests.conftest import CALLBACK, Database, FakeClock, ProviderAccount
from tests.fake_network import FakeNetwork

TOKENS = {"accessToken": "at-SECRET-1", "idToken": "id-SECRET-2", "refreshToken": "rt-SECRET-3"}


def provider_with_webhook(runtime: Runtime, name: str = "Acme") -> str:
    provider, _ = create_provider(runtime, name, webhook_url="https://hooks.acme.example/in")
    assert ensure_webhook_secret(runtime, provider.provider_id)
    return provider.provider_id


def emit_with_tokens(runtime: Runtime, provider_id: str) -> str:
    with runtime.engine.begin() as connection:
        return emit_event(
            connection,
            runtime,
            provider_id,
            "actionItem.completed",
            {"actionItemId": "act_1", "status": "completed", "authenticationResult": TOKENS},
        )


def stored(runtime: Runtime, event_id: str) -> tuple[str, str | None]:
    with runtime.engine.connect() as connection:
        row = connection.execute(
            select(events.c.payload, events.c.sealed_tokens).where(events.c.id == event_id)
        ).one()
    return row.payload, row.sealed_tokens


def test_tokens_in_an_event_are_sealed_and_never_served_by_the_events_api(
    runtime: Runtime,
) -> None:
    """Someone reading the events table or the events API finds no token in clear."""
    provider_id = provider_with_webhook(runtime)
    event_id = emit_with_tokens(runtime, provider_id)
    payload, sealed = stored(runtime, event_id)
    assert sealed is not None
    for token in TOKENS.values():
        assert token not in payload and token not in sealed
    assert "authenticationResult" not in get_event(runtime, provider_id, event_id)["data"]
    body = json.loads(open_event_body(runtime, payload, sealed))
    assert body["data"]["authenticationResult"] == TOKENS


def test_sealed_tokens_cannot_be_moved_to_another_event(runtime: Runtime) -> None:
    """An attacker with write access copies one event's sealed tokens onto another: they fail."""
    provider_id = provider_with_webhook(runtime)
    first, second = emit_with_tokens(runtime, provider_id), emit_with_tokens(runtime, provider_id)
    _, sealed = stored(runtime, first)
    payload, _ = stored(runtime, second)
    body = json.loads(open_event_body(runtime, payload, sealed))
    assert "authenticationResult" not in body["data"]


def test_event_keys_rotate_like_the_state_keys() -> None:
    old = EventKeyring.from_setting("k1:" + "A" * 43)
    sealed = old.seal(b"token", "evt_1", lambda n: b"\x01" * n)
    rotated = EventKeyring.from_setting("k2:" + "B" * 43 + ",k1:" + "A" * 43)
    assert rotated.active_kid == "k2"
    assert rotated.open(sealed, "evt_1") == b"token"
    assert rotated.seal(b"token", "evt_1", lambda n: b"\x02" * n).startswith("v1.k2.")
    with pytest.raises(ValueError):
        EventKeyring.from_setting("k3:" + "C" * 43).open(sealed, "evt_1")
    for bad in ("", "k1", "k1:short", "k1:" + "A" * 43 + ",k1:" + "B" * 43):
        with pytest.raises(ValueError):
            EventKeyring.from_setting(bad)


def test_an_event_whose_key_was_retired_does_not_block_the_providers_queue(
    runtime: Runtime,
) -> None:
    """The operator drops an old key from CTT_EVENT_KEYS: its event goes out without tokens,
    and the provider's later events are delivered too, instead of a queue stuck forever."""
    provider_id = provider_with_webhook(runtime)
    old = emit_with_tokens(runtime, provider_id)
    rotated = replace(runtime, settings=replace(runtime.settings, event_keys="k9:" + "Z" * 43))
    later = emit_with_tokens(rotated, provider_id)
    network = FakeNetwork()
    enqueue_new_events(rotated)
    assert deliver_due(rotated, network.sender()).delivered == 2
    bodies = {json.loads(r.body)["eventId"]: json.loads(r.body) for r in network.requests}
    assert "authenticationResult" not in bodies[old]["data"]
    assert bodies[later]["data"]["authenticationResult"] == TOKENS
    assert stored(runtime, old)[1] is None


def test_tokens_are_erased_once_delivered(runtime: Runtime) -> None:
    provider_id = provider_with_webhook(runtime)
    event_id = emit_with_tokens(runtime, provider_id)
    network = FakeNetwork()
    enqueue_new_events(runtime)
    assert deliver_due(runtime, network.sender()).delivered == 1
    assert json.loads(network.requests[0].body)["data"]["authenticationResult"] == TOKENS
    assert stored(runtime, event_id)[1] is None


def test_tokens_are_erased_when_the_retry_window_ends(runtime: Runtime, clock: FakeClock) -> None:
    """A receiver that never answers does not keep the tokens alive in our database."""
    provider_id = provider_with_webhook(runtime)
    event_id = emit_with_tokens(runtime, provider_id)
    down = FakeNetwork(status=503)
    enqueue_new_events(runtime)
    for _ in range(100):
        deliver_due(runtime, down.sender())
        delivery = get_delivery(runtime, provider_id, event_id)
        if delivery.status == "failed":
            break
        assert stored(runtime, event_id)[1] is not None  # still needed for the next try
        clock.current = delivery.next_attempt_at
    assert delivery.status == "failed" and stored(runtime, event_id)[1] is None


def test_tokens_of_an_event_never_queued_are_erased_by_the_worker(
    runtime: Runtime, clock: FakeClock
) -> None:
    provider, _ = create_provider(runtime, "No Hook")
    event_id = emit_with_tokens(runtime, provider.provider_id)
    clock.advance(hours=25)
    assert enforce_retention(runtime).tokens_erased == 1
    assert stored(runtime, event_id)[1] is None


def test_retention_bounds_every_table_that_grows_with_traffic(
    runtime: Runtime, clock: FakeClock
) -> None:
    settings = replace(
        runtime.settings,
        retention_events_days=30,
        retention_audit_days=60,
        retention_attempts_days=10,
        retention_flows_days=7,
    )
    runtime = replace(runtime, settings=settings)
    provider_id = provider_with_webhook(runtime)
    old = emit_with_tokens(runtime, provider_id)
    with runtime.engine.begin() as connection:
        record_audit(connection, runtime, provider_id, "operator", "apiKey.rotated")
    enqueue_new_events(runtime)
    deliver_due(runtime, FakeNetwork().sender())
    clock.advance(days=31)
    kept = emit_with_tokens(runtime, provider_id)
    enforce_retention(runtime)

    def count(table: object, *where: object) -> int:
        with runtime.engine.connect() as connection:
            query = select(func.count()).select_from(table)  # type: ignore[arg-type]
            return int(connection.execute(query.where(*where)).scalar_one())  # type: ignore[arg-type]

    assert count(events, events.c.id == old) == 0
    assert count(webhook_deliveries) == 0 and count(webhook_attempts) == 0
    assert count(events, events.c.id == kept) == 1
    assert count(audit_log) >= 1  # 31 days < 60
    clock.advance(days=30)
    enforce_retention(runtime)
    assert count(audit_log) == 0


def test_a_provider_still_being_retried_keeps_its_old_event(
    runtime: Runtime, clock: FakeClock
) -> None:
    settings = replace(runtime.settings, retention_events_days=1)
    runtime = replace(runtime, settings=settings)
    provider_id = provider_with_webhook(runtime)
    event_id = emit_with_tokens(runtime, provider_id)
    enqueue_new_events(runtime)
    clock.advance(days=2)
    enforce_retention(runtime)
    assert get_delivery(runtime, provider_id, event_id).status == "pending"


def test_flow_rows_are_kept_no_longer_than_their_retention(
    runtime: Runtime, clock: FakeClock, provider: ProviderAccount
) -> None:
    """A flow row the lifecycle keeps (used or not) still goes after CTT_RETENTION_FLOWS_DAYS."""
    runtime = replace(runtime, settings=replace(runtime.settings, retention_flows_days=7))
    enterprise = create_enterprise(runtime, provider.provider_id, name="A", external_id="a")
    issued = create_action_item(
        runtime,
        provider.provider_id,
        action_type="REGISTRATION",
        enterprise_id=enterprise.enterprise_id,
        callback_url=CALLBACK,
    )
    with runtime.engine.begin() as connection:
        connection.execute(
            insert(flows).values(
                jti="j1",
                action_item_id=issued.item.action_item_id,
                created_at=clock.current,
                expires_at=clock.current + timedelta(days=365),
                consumed_at=clock.current,
            )
        )
    clock.advance(days=6)
    assert enforce_retention(runtime).flows == 0
    clock.advance(days=2)
    assert enforce_retention(runtime).flows == 1


def test_the_data_folder_is_private_and_the_sqlite_file_too(tmp_path: Path) -> None:
    """Another local user cannot read the database (and the tokens waiting in it)."""
    folder = tmp_path / "var" / "data"
    engine = make_engine(f"sqlite:///{folder}/ctt-broker.sqlite3")
    with engine.connect():
        pass
    engine.dispose()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "ctt-broker.sqlite3").stat().st_mode) == 0o600


def test_development_providers_are_refused_in_production(runtime: Runtime) -> None:
    """A sandbox leftover (http on loopback) must not work on a production broker."""
    sandboxed, _ = create_provider(
        runtime,
        "Sandbox Leftover",
        development=True,
        callback_urls=("http://127.0.0.1:8090/callback",),
        webhook_url="http://127.0.0.1:8090/webhooks",
    )
    production = replace(runtime, settings=replace(runtime.settings, mode="production"))
    with pytest.raises(errors.DevelopmentProviderInProduction):
        create_provider(production, "New Dev", development=True)
    assert get_provider(production, sandboxed.provider_id).development is False
    from broker.callbacks import check_callback_url

    leftover = get_provider(production, sandboxed.provider_id)
    with pytest.raises(errors.CallbackUrlRejected):
        check_callback_url(
            "http://127.0.0.1:8090/callback",
            leftover.callback_urls,
            development=leftover.development,
        )


def test_set_webhook_from_the_console_refuses_internal_targets(
    database: Database, tmp_path: Path, runtime: Runtime
) -> None:
    """``set-webhook`` accepted 10.0.0.1 and the cloud metadata address."""
    env = {"CTT_DATABASE_URL": database.url, "CTT_DATA_DIR": str(tmp_path)}
    out, err = io.StringIO(), io.StringIO()
    assert main(["provider", "create", "Acme"], env, out, err) == 0
    for url in ("https://10.0.0.1/hook", "https://169.254.169.254/latest/meta-data"):
        err = io.StringIO()
        assert main(["provider", "set-webhook", "Acme", url], env, io.StringIO(), err) == (
            EXIT_REFUSED
        )
        assert "WEBHOOK_URL_BLOCKED" in err.getvalue()
    out = io.StringIO()
    assert main(["provider", "redeliver-webhooks", "Acme"], env, out, io.StringIO()) == (
        EXIT_REFUSED
    )


def test_a_malformed_event_key_stops_the_start_not_a_callback(runtime: Runtime) -> None:
    from broker.credentials import load_credentials

    settings = replace(runtime.settings, event_keys="k1:too-short")
    with pytest.raises(ValueError, match="CTT_EVENT_KEYS"):
        load_credentials(settings, runtime.catalog, runtime.random_bytes)


def test_tokens_left_in_clear_by_older_versions_are_stripped_on_upgrade(tmp_path: Path) -> None:
    """An older database held refresh tokens in events and socket errors: the upgrade drops both."""
    from sqlalchemy import text

    from broker.migrate import upgrade_database

    engine = make_engine(f"sqlite:///{tmp_path}/old.sqlite3")
    upgrade_database(engine, "0004")
    document = {
        "id": "evt_1",
        "type": "actionItem.completed",
        "data": {"status": "completed", "authenticationResult": TOKENS},
    }
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO providers (id, name, development, share_refresh_token, "
                "webhook_include_tokens, created_at) VALUES ('prv_1', 'Old', 0, 1, 1, "
                "'2026-01-01 00:00:00.000000')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO events (id, provider_id, type, payload, created_at) VALUES "
                "('evt_1', 'prv_1', 'actionItem.completed', :payload, "
                "'2026-01-01 00:00:00.000000')"
            ),
            {"payload": json.dumps(document)},
        )
        connection.execute(
            text(
                "INSERT INTO webhook_deliveries (event_id, provider_id, url, status, attempts, "
                "round_attempts, next_attempt_at, created_at, last_error) VALUES ('evt_1', "
                "'prv_1', 'https://h.example/', 'pending', 1, 1, '2026-01-01 00:00:00.000000', "
                "'2026-01-01 00:00:00.000000', 'ConnectError: [Errno 111] 10.0.0.5:6379')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO webhook_attempts (id, event_id, attempt, url, started_at, "
                "duration_ms, error, outcome) VALUES ('wha_1', 'evt_1', 1, 'https://h.example/', "
                "'2026-01-01 00:00:00.000000', 3, 'ConnectError: [Errno 111] 10.0.0.5:6379', "
                "'network_error')"
            )
        )
    upgrade_database(engine)
    with engine.connect() as connection:
        payload = connection.execute(text("SELECT payload FROM events")).scalar_one()
        attempt_error = connection.execute(text("SELECT error FROM webhook_attempts")).scalar_one()
        last_error = connection.execute(
            text("SELECT last_error FROM webhook_deliveries")
        ).scalar_one()
    engine.dispose()
    assert attempt_error == last_error == "network"  # no port-scan answers kept either
    assert json.loads(payload)["data"] == {"status": "completed"}
    assert all(token not in payload for token in TOKENS.values())
