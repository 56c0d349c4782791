"""Every request's cost is independent of history: no query reads an enterprise's past.

An enterprise with thousands of finished action items, events and audit lines
must cost getActionItemUrl, getEnterprise and the filtered lists what a fresh one
costs. Timing belongs to the benchmark (``make bench``, ``--history``); here the
database's own query plans show that every statement these operations send
seeks an index on the history tables instead of scanning them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event, insert, text

from broker import action_items, enterprises, events
from broker.db import action_items as action_items_table
from broker.db import audit_log
from broker.db import events as events_table
from broker.ids import new_id
from broker.runtime import Runtime
from tests.conftest import CALLBACK, Database, ProviderAccount

HISTORY = 3000
PAGE_FILLER = 40
HISTORY_TABLES = ("action_items", "audit_log", "events")


def seed_history(
    runtime: Runtime, provider_id: str, enterprise_id: str, count: int = HISTORY
) -> None:
    """Finished items of every kind, with their audit lines and events, long ago."""
    now = runtime.now()
    kinds = [spec for spec in runtime.catalog.actions if not spec.deploys_teams_apps]
    items, audits, outbox = [], [], []
    for n in range(count):
        spec = kinds[n % len(kinds)]
        created = now - timedelta(days=400, seconds=n)
        item_id = new_id(runtime, "act", created)
        items.append(
            {
                "id": item_id,
                "handle_hash": f"{enterprise_id}{n:024x}",
                "provider_id": provider_id,
                "enterprise_id": enterprise_id,
                "action_type": spec.action_type,
                "consent_type": spec.consent_type,
                "callback_url": CALLBACK,
                "result_delivery": "redirect",
                "reregister": False,
                # Never-clicked links stay "created" after they expire: history too.
                "status": ("completed", "failed", "created", "revoked")[n % 4],
                "created_at": created,
                "expires_at": created + timedelta(days=1),
                "updated_at": created,
            }
        )
        audits.append(
            {
                "id": new_id(runtime, "aud", created),
                "provider_id": provider_id,
                "actor": "provider",
                "action": "actionItem.created",
                "enterprise_id": enterprise_id,
                "action_item_id": item_id,
                "details": "{}",
                "created_at": created,
            }
        )
        outbox.append(
            {
                "id": new_id(runtime, "evt", created),
                "provider_id": provider_id,
                "type": "actionItem.completed",
                "enterprise_id": enterprise_id,
                "action_item_id": item_id,
                "payload": json.dumps({"id": "x"}),
                "created_at": created,
            }
        )
    with runtime.engine.begin() as connection:
        connection.execute(insert(action_items_table), items)
        connection.execute(insert(audit_log), audits)
        connection.execute(insert(events_table), outbox)
        if connection.dialect.name == "postgresql":
            for table in HISTORY_TABLES:
                connection.execute(text(f"ANALYZE {table}"))


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT sent through ``engine`` meanwhile, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def work(engine: Engine, sent: list[tuple[str, Any]]) -> int:
    """How much the database did to answer ``sent``, counted by the database itself.

    SQLite: virtual machine steps (its progress handler, every 10 steps).
    PostgreSQL: rows its plan nodes read on the history tables, kept or filtered
    out (``EXPLAIN ANALYZE``).
    """
    total = 0
    with engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        if engine.dialect.name == "sqlite":
            steps = [0]

            def count() -> int:
                steps[0] += 1
                return 0

            raw.set_progress_handler(count, 10)
            try:
                for statement, parameters in sent:
                    raw.execute(statement, parameters).fetchall()
            finally:
                raw.set_progress_handler(None, 10)
            return steps[0]
        cursor = raw.cursor()
        for statement, parameters in sent:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters)
            total += _rows_read(cursor.fetchone()[0][0]["Plan"])
        cursor.close()
    return total


def _rows_read(node: dict[str, Any]) -> int:
    own = 0
    if node.get("Relation Name") in HISTORY_TABLES:
        loops = node.get("Actual Loops", 1)
        own = (node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0)) * loops
    return own + sum(_rows_read(child) for child in node.get("Plans", []))


def operations(runtime: Runtime, provider_id: str, enterprise_id: str) -> list[tuple[str, Any]]:
    """The SELECTs of getActionItemUrl, getEnterprise and the lists filtered by enterprise."""
    with statements(runtime.engine) as sent:
        issued = action_items.create_action_item(
            runtime,
            provider_id,
            action_type="REGISTRATION",
            enterprise_id=enterprise_id,
            callback_url=CALLBACK,
        )
        enterprises.get_enterprise(runtime, provider_id, enterprise_id)
        action_items.list_action_items(runtime, provider_id, enterprise_id, limit=20)
        events.list_events(runtime, provider_id, limit=20, enterprise_id=enterprise_id)
        events.list_audit(runtime, provider_id, limit=20, enterprise_id=enterprise_id)
        events.list_audit(runtime, provider_id, limit=20, action_item_id=issued.item.action_item_id)
    assert len(sent) >= 6
    return sent


def test_an_enterprise_with_a_long_history_costs_what_a_fresh_one_costs(
    runtime: Runtime, provider: ProviderAccount, database: Database
) -> None:
    """Before, the consent summary grouped every action item the enterprise ever had.

    The same operations on a young enterprise (a little over a page of everything)
    and on one with thousands of finished items, events and audit lines, in the
    same database: the database does the same work for both, give or take a little.
    """
    pid = provider.provider_id
    fresh = enterprises.create_enterprise(runtime, pid, name="Fresh", external_id="fresh")
    old = enterprises.create_enterprise(runtime, pid, name="Contoso", external_id="contoso")
    # Both have more than a page of everything, so every list returns full pages.
    seed_history(runtime, pid, fresh.enterprise_id, count=PAGE_FILLER)
    seed_history(runtime, pid, old.enterprise_id)
    operations(runtime, pid, fresh.enterprise_id)  # warm caches and plans alike

    fresh_work = work(database.engine, operations(runtime, pid, fresh.enterprise_id))
    old_work = work(database.engine, operations(runtime, pid, old.enterprise_id))
    assert fresh_work > 0
    # 3000 rows of history: a query reading them would cost thousands more.
    assert old_work <= fresh_work * 1.2 + 50, (fresh_work, old_work)

    summary = enterprises.get_enterprise(runtime, pid, old.enterprise_id)
    by_type = {c.consent_type: c for c in summary.consents}
    assert all(c.requested_at is not None for c in by_type.values())
    assert all(c.status == "notRequested" for c in by_type.values())


def test_a_live_request_among_thousands_of_dead_ones_makes_its_consent_pending(
    runtime: Runtime, provider: ProviderAccount
) -> None:
    enterprise = enterprises.create_enterprise(
        runtime, provider.provider_id, name="Contoso", external_id="contoso"
    )
    eid = enterprise.enterprise_id
    enterprises.record_registration(runtime, provider.provider_id, eid, "tenant-1")
    seed_history(runtime, provider.provider_id, eid)
    issued = action_items.create_action_item(
        runtime,
        provider.provider_id,
        action_type="GET_PRESENCE_CONSENT",
        enterprise_id=eid,
        callback_url=CALLBACK,
    )
    summary = enterprises.get_enterprise(runtime, provider.provider_id, eid)
    by_type = {c.consent_type: c for c in summary.consents}
    assert by_type["Presence"].status == "pending"
    assert by_type["Presence"].requested_at == issued.item.created_at
    assert {c.status for t, c in by_type.items() if t != "Presence"} == {"notRequested"}
